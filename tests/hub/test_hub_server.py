"""The test hub speaks the Hub protocol the way the real huggingface_hub client expects (no mocks on the client)."""

from __future__ import annotations

import base64
import hashlib
import json

import httpx2 as httpx
import pytest
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

pytestmark = pytest.mark.filterwarnings("ignore:Use .content=<...>.:DeprecationWarning")

REPO = "test-user/server-test"


def _auth(hub) -> dict:
    return {"authorization": f"Bearer {hub.token}"}


def _commit(api: HfApi, files: dict[str, bytes], message: str, repo_id: str = REPO, **kw):
    ops = [CommitOperationAdd(path_in_repo=p, path_or_fileobj=b) for p, b in files.items()]
    return api.create_commit(repo_id, ops, commit_message=message, **kw)


def test_create_repo_conflict_and_initial_commit(hub):
    api = HfApi()
    url = api.create_repo(REPO)
    assert url.repo_id == REPO and url.startswith(hub.url)
    with pytest.raises(HfHubHTTPError) as e:
        api.create_repo(REPO)
    assert e.value.response.status_code == 409
    assert e.value.response.json()["url"] == f"{hub.url}/{REPO}"
    assert api.create_repo(REPO, exist_ok=True).repo_id == REPO
    # like the Hub: a new repo has one commit holding .gitattributes
    info = api.model_info(REPO)
    assert len(info.sha) == 40 and [s.rfilename for s in info.siblings] == [".gitattributes"]
    assert [c.title for c in api.list_repo_commits(REPO)] == ["initial commit"]
    for bad in ("bad--name", "-x", "a b", ""):  # the client validates ids too: talk to the server directly
        r = httpx.post(f"{hub.url}/api/repos/create", json={"name": bad, "organization": None}, headers=_auth(hub))
        assert r.status_code == 400, (bad, r.text)


def test_regular_and_lfs_upload_paths(hub):
    api = HfApi()
    api.create_repo(REPO)
    hub.lfs_threshold = 2048  # so that a plain text file also goes through LFS by size
    weights = bytes(range(256)) * 8  # binary -> LFS (sample holds NUL bytes)
    files = {
        "config.json": b'{"a": 1}\n',  # regular
        "weights.safetensors": b"not really safetensors but *.safetensors is LFS by .gitattributes",
        "blob.dat": weights,  # LFS by content
        "big.txt": b"x" * 4096,  # LFS by size
        "sub/dir/notes.md": b"hello\n",  # regular, nested
    }
    info = _commit(api, files, "mixed upload")
    repo = hub.repo(REPO)
    head = repo.commits[repo.branches["main"]]
    assert head.sha == info.oid and head.parents == [api.list_repo_commits(REPO)[1].commit_id]
    lfs = {p for p, e in head.files.items() if e.is_lfs}
    assert lfs == {"weights.safetensors", "blob.dat", "big.txt"}
    for p, content in files.items():
        assert hub.file_bytes(head.files[p]) == content
    # exactly the LFS files were PUT, each once, after one batch call
    puts = hub.requests("PUT", "/_lfs/upload/")
    assert sorted(e.path.split("/")[-1].split("?")[0] for e in puts) == sorted(
        hashlib.sha256(files[p]).hexdigest() for p in lfs
    )
    assert len(hub.requests("POST", ".git/info/lfs/objects/batch")) == 1
    # tree / paths-info / siblings metadata as the client parses them
    tree = {f.path: f for f in api.list_repo_tree(REPO, recursive=True)}
    assert tree["blob.dat"].lfs.sha256 == hashlib.sha256(weights).hexdigest() and tree["blob.dat"].size == len(weights)
    assert tree["config.json"].lfs is None and tree["config.json"].blob_id == hashlib.sha1(
        b"blob %d\0" % len(files["config.json"]) + files["config.json"]).hexdigest()
    assert {f.path for f in api.list_repo_tree(REPO)} == {".gitattributes", "config.json", "weights.safetensors",
                                                         "blob.dat", "big.txt", "sub"}
    assert [p.path for p in api.get_paths_info(REPO, ["sub", "config.json", "missing"])] == ["sub", "config.json"]
    # download both kinds into a clean cache: LFS goes through the redirect to the "CDN" origin, without auth
    folder = snapshot_download(REPO)
    for p, content in files.items():
        with open(f"{folder}/{p}", "rb") as f:
            assert f.read() == content
    if hub.cdn_url != hub.url:
        assert any(e.status == 302 for e in hub.requests("HEAD", "/resolve/"))
        assert hub.requests("GET", "/_cdn/lfs/") and hub.cdn_requests_with_auth == []
    # unchanged files are skipped by the client thanks to the preupload oids: no new commit
    again = _commit(api, {"config.json": files["config.json"], "blob.dat": weights}, "same again")
    assert again.oid == info.oid
    # deletions
    api.create_commit(REPO, [CommitOperationDelete("sub/", is_folder=True), CommitOperationDelete("big.txt")],
                      commit_message="delete")
    assert sorted(api.list_repo_files(REPO)) == [".gitattributes", "blob.dat", "config.json", "weights.safetensors"]


def test_lfs_upload_is_verified_by_the_server(hub):
    api = HfApi()
    api.create_repo(REPO)
    good, bad = b"the real content", b"something else!!"
    oid = hashlib.sha256(good).hexdigest()
    batch = httpx.post(
        f"{hub.url}/{REPO}.git/info/lfs/objects/batch",
        headers={**_auth(hub), "Accept": "application/vnd.git-lfs+json", "Content-Type": "application/vnd.git-lfs+json"},
        json={"operation": "upload", "transfers": ["basic"], "objects": [{"oid": oid, "size": len(good)}],
              "hash_algo": "sha256"},
    )
    assert batch.status_code == 200, batch.text
    href = batch.json()["objects"][0]["actions"]["upload"]["href"]
    # no PUT without a batch call announcing the object
    stray = b"never announced"
    r = httpx.put(f"{hub.url}/_lfs/upload/{hashlib.sha256(stray).hexdigest()}", content=stray)
    assert r.status_code == 403
    # wrong bytes for the announced oid -> 400, nothing stored
    r = httpx.put(href, content=bad)
    assert r.status_code == 400 and "sha256 mismatch" in r.json()["error"]
    assert oid not in hub.state.lfs_objects
    # a commit referencing the never-uploaded object is refused
    ndjson = b"\n".join(json.dumps(x).encode() for x in [
        {"key": "header", "value": {"summary": "add", "description": ""}},
        {"key": "lfsFile", "value": {"path": "w.bin", "algo": "sha256", "oid": oid, "size": len(good)}},
    ])
    r = httpx.post(f"{hub.url}/api/models/{REPO}/commit/main", content=ndjson,
                   headers={**_auth(hub), "Content-Type": "application/x-ndjson"})
    assert r.status_code == 422 and "has not been uploaded" in r.json()["error"]
    # chunked upload of the right bytes is accepted, then the commit goes through
    r = httpx.put(href, content=iter([good[:5], good[5:]]))
    assert r.status_code == 200, r.text
    r = httpx.post(f"{hub.url}/api/models/{REPO}/commit/main", content=ndjson,
                   headers={**_auth(hub), "Content-Type": "application/x-ndjson"})
    assert r.status_code == 200, r.text
    assert hf_hub_download(REPO, "w.bin", cache_dir=hub.cache_dir) and api.list_repo_files(REPO) == [
        ".gitattributes", "w.bin"]
    # size mismatch between the batch announcement and the PUT -> 400
    data = b"0123456789"
    oid2 = hashlib.sha256(data).hexdigest()
    httpx.post(f"{hub.url}/{REPO}.git/info/lfs/objects/batch",
               headers={**_auth(hub), "Accept": "application/vnd.git-lfs+json"},
               json={"operation": "upload", "objects": [{"oid": oid2, "size": 99}]})
    r = httpx.put(f"{hub.url}/_lfs/upload/{oid2}", content=data)
    assert r.status_code == 400 and "size mismatch" in r.json()["error"]


def test_commit_payload_is_validated(hub):
    api = HfApi()
    api.create_repo(REPO)
    url = f"{hub.url}/api/models/{REPO}/commit/main"
    nd = {"Content-Type": "application/x-ndjson", **_auth(hub)}
    line = lambda k, v: json.dumps({"key": k, "value": v}).encode()  # noqa: E731
    cases = [
        ({"Content-Type": "application/json", **_auth(hub)}, line("header", {"summary": "x"}), 400),
        (nd, line("file", {"path": "a", "content": "YQ==", "encoding": "base64"}), 400),  # no header first
        (nd, line("header", {"summary": ""}), 400),
        (nd, b"{not json", 400),
        (nd, line("header", {"summary": "x"}) + b"\n" + line("file", {"path": "a", "content": "%%%", "encoding": "base64"}), 400),
        (nd, line("header", {"summary": "x"}) + b"\n" + line("file", {"path": "../a", "content": "YQ==", "encoding": "base64"}), 400),
        (nd, line("header", {"summary": "x"}) + b"\n" + line("mystery", {"path": "a"}), 400),
        (nd, line("header", {"summary": "x"}) + b"\n" + line("deletedFile", {"path": "nope"}), 404),
        ({"Content-Type": "application/x-ndjson"}, line("header", {"summary": "x"}), 401),  # no token
    ]
    for headers, body, status in cases:
        r = httpx.post(url, content=body, headers=headers)
        assert r.status_code == status, (body, r.status_code, r.text)
    ok = httpx.post(url, headers=nd, content=line("header", {"summary": "x"}) + b"\n"
                    + line("file", {"path": "a.txt", "content": base64.b64encode(b"a").decode(), "encoding": "base64"}))
    assert ok.status_code == 200 and len(ok.json()["commitOid"]) == 40
    # parentCommit is a precondition (client: parent_commit=...)
    first = api.list_repo_commits(REPO)[-1].commit_id
    with pytest.raises(HfHubHTTPError) as e:
        _commit(api, {"b.txt": b"b"}, "stale parent", parent_commit=first)
    assert e.value.response.status_code == 412
    # commits only go to branches
    with pytest.raises(RevisionNotFoundError):
        _commit(api, {"b.txt": b"b"}, "to a sha", revision=first)
    # README metadata is validated before the upload
    with pytest.raises(ValueError, match="Invalid metadata"):
        _commit(api, {"README.md": b"---\nlicense: mit\nnot yaml at all\n---\n# x\n"}, "bad card")


def test_errors_map_to_client_exceptions(hub):
    api = HfApi()
    api.create_repo(REPO)
    _commit(api, {"a.txt": b"a"}, "add a")
    with pytest.raises(RepositoryNotFoundError) as e:
        hf_hub_download("test-user/nope", "a.txt", cache_dir=hub.cache_dir)
    assert "test-user/nope" in str(e.value)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("test-user/nope")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "a.txt", revision="no-such-branch", cache_dir=hub.cache_dir)
    with pytest.raises(RevisionNotFoundError):
        snapshot_download(REPO, revision="0" * 40, cache_dir=hub.cache_dir)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.txt", cache_dir=hub.cache_dir)
    r = httpx.head(f"{hub.url}/{REPO}/resolve/main/missing.txt")
    assert r.status_code == 404 and r.headers["X-Error-Code"] == "EntryNotFound" and len(r.headers["X-Repo-Commit"]) == 40
    assert httpx.get(f"{hub.url}/api/models/test-user/nope").headers["X-Error-Code"] == "RepoNotFound"
    assert httpx.get(f"{hub.url}/api/models/{REPO}/revision/nope").headers["X-Error-Code"] == "RevisionNotFound"
    # regular-file metadata headers, and range requests (used to resume downloads)
    r = httpx.head(f"{hub.url}/{REPO}/resolve/main/a.txt")
    assert r.headers["ETag"].strip('"') == hashlib.sha1(b"blob 1\0a").hexdigest() and r.headers["Content-Length"] == "1"
    assert httpx.get(f"{hub.url}/{REPO}/resolve/main/a.txt", headers={"Range": "bytes=0-"}).status_code == 206


def test_history_branches_and_revisions(hub):
    api = HfApi()
    api.create_repo(REPO)
    c1 = _commit(api, {"v.txt": b"one"}, "v1").oid
    c2 = _commit(api, {"v.txt": b"two"}, "v2").oid
    assert c1 != c2 and [c.commit_id for c in api.list_repo_commits(REPO)][:2] == [c2, c1]
    read = lambda rev: open(hf_hub_download(REPO, "v.txt", revision=rev, cache_dir=hub.cache_dir)).read()  # noqa: E731
    assert read("main") == "two" and read(c1) == "one" and read(c1[:7]) == "one"
    assert api.model_info(REPO, revision=c1).sha == c1
    api.create_branch(REPO, branch="dev", revision=c1)
    with pytest.raises(HfHubHTTPError):
        api.create_branch(REPO, branch="dev")
    api.create_branch(REPO, branch="dev", exist_ok=True)
    c3 = _commit(api, {"v.txt": b"three"}, "on dev", revision="dev").oid
    assert read("dev") == "three" and read("main") == "two"
    assert api.list_repo_commits(REPO, revision="dev")[1].commit_id == c1
    refs = {b.name: b.target_commit for b in api.list_repo_refs(REPO).branches}
    assert refs == {"main": c2, "dev": c3}
    pr = _commit(api, {"v.txt": b"pr"}, "a PR", create_pr=True)
    assert pr.pr_url and pr.pr_revision == "refs/pr/1" and read("refs/pr/1") == "pr" and read("main") == "two"


def test_auth_and_private_repos(hub):
    api = HfApi()
    with pytest.raises(HfHubHTTPError) as e:
        HfApi(token=False).create_repo("test-user/anon")
    assert e.value.response.status_code == 401
    with pytest.raises(HfHubHTTPError) as e:
        api.create_repo("someone-else/x")
    assert e.value.response.status_code == 403
    with pytest.raises(HfHubHTTPError) as e:
        HfApi(token="hf_wrong").model_info("test-user/x")
    assert e.value.response.status_code == 401
    api.create_repo("test-user/secret", private=True)
    assert api.model_info("test-user/secret").private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info("test-user/secret")
    api.create_repo("test-org/shared")  # organisations the token belongs to are writable
    assert api.whoami()["name"] == hub.user
    api.delete_repo("test-org/shared")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("test-org/shared")
