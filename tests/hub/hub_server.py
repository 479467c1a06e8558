"""A small, in-memory, Hugging Face Hub-compatible HTTP server for tests.

Standard library only (``http.server`` + ``threading``). It implements the subset of the Hub HTTP API that
``huggingface_hub`` (>= 1.0, measured against 2.4) and ``transformers`` use to create repos, commit files (regular
and Git-LFS "basic" transfer), and download them again (``hf_hub_download`` / ``snapshot_download`` /
``from_pretrained``). It keeps a real commit history (each commit has a new 40-hex sha and a parent; branches map
to shas; a revision is a branch name or a full/abbreviated commit sha).

The server validates what the client sends (JSON / NDJSON shapes, LFS sha256 + size on upload, LFS objects
referenced by a commit must have been uploaded, ``parentCommit`` preconditions, ...) and answers errors like the
Hub does (status codes plus ``X-Error-Code`` / ``X-Error-Message`` headers that ``hf_raise_for_status`` maps to
``RepositoryNotFoundError``, ``RevisionNotFoundError``, ``RemoteEntryNotFoundError``, ``BadRequestError``...).

Every request is recorded in ``HubServer.request_log`` (and logged through ``logging``) so that a failing test
can show what the client asked. See ``tests/hub/README.md`` for the list of endpoints.

Usage::

    with HubServer() as hub:
        print(hub.url)            # http://127.0.0.1:<port>
        ...                       # point HF_ENDPOINT / huggingface_hub.constants.ENDPOINT at hub.url
        print(hub.format_log())
"""

from __future__ import annotations

import base64
import binascii
import datetime as _dt
import fnmatch
import hashlib
import itertools
import json
import logging
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

logger = logging.getLogger("tests.hub.server")

DEFAULT_TOKEN = "hf_test_token_0123456789"
DEFAULT_USER = "test-user"

# Files bigger than this are always stored with LFS (the Hub uses 10 MB for regular git blobs).
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024

# What the Hub writes in the initial commit of a new model repo (abridged, same rules for the extensions we use).
DEFAULT_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
"""

_HEX40 = re.compile(r"^[0-9a-f]{40}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_SHORT_SHA = re.compile(r"^[0-9a-f]{7,40}$")
_REPO_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REPO_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_URL_PREFIX = {"model": "", "dataset": "datasets/", "space": "spaces/"}


def git_blob_sha1(data: bytes) -> str:
    """``git hash-object`` of ``data`` (what the Hub reports as a regular file's oid / ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class HubError(Exception):
    """Raised by handlers; turned into an HTTP error response with Hub-style error headers."""

    def __init__(
        self, status: int, message: str, code: str | None = None, extra: dict | None = None, headers: dict | None = None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code  # -> X-Error-Code (RepoNotFound, RevisionNotFound, EntryNotFound, ...)
        self.extra = extra or {}  # extra keys of the JSON error body
        self.headers = headers or {}  # extra response headers


# --------------------------------------------------------------------------------------------------------------------
# Repository model
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    path: str
    size: int
    blob_id: str  # git oid (sha1 of the content, or of the LFS pointer for LFS files)
    lfs_oid: str | None = None  # sha256 of the content for LFS files
    content: bytes | None = None  # regular files only (LFS content lives in the server-wide LFS store)

    @property
    def is_lfs(self) -> bool:
        return self.lfs_oid is not None

    def tree_json(self) -> dict:
        out = {"type": "file", "oid": self.blob_id, "size": self.size, "path": self.path}
        if self.lfs_oid is not None:
            out["lfs"] = {"oid": self.lfs_oid, "size": self.size, "pointerSize": len(lfs_pointer(self.lfs_oid, self.size))}
        return out


@dataclass
class Commit:
    sha: str
    parents: list[str]
    title: str
    message: str
    date: str
    author: str
    files: dict[str, FileEntry]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # branch name (incl. refs/pr/N) -> commit sha
    pr_count: int = 0

    def resolve(self, revision: str) -> Commit:
        """Branch name, full sha, or unique abbreviated sha (>= 7 hex chars)."""
        if revision in self.branches:
            return self.commits[self.branches[revision]]
        rev = revision.lower()
        if _HEX40.match(rev) and rev in self.commits:
            return self.commits[rev]
        if _SHORT_SHA.match(rev):
            matches = [sha for sha in self.commits if sha.startswith(rev)]
            if len(matches) == 1:
                return self.commits[matches[0]]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")


class HubState:
    """All repos and the server-wide LFS object store (content-addressed by sha256)."""

    def __init__(self, tokens: dict[str, str]):
        self.lock = threading.RLock()
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.tokens = tokens  # token -> user name
        self._counter = itertools.count()

    def new_sha(self, *parts: str) -> str:
        h = hashlib.sha1()
        h.update(str(next(self._counter)).encode())
        for p in parts:
            h.update(b"\0" + p.encode("utf-8", "surrogatepass"))
        return h.hexdigest()

    def get_repo(self, repo_type: str, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        # The Hub does not reveal private repos to other users: same error as a missing repo.
        if repo is None or (repo.private and user is None):
            raise HubError(
                404,
                f"Repository Not Found for url: {repo_type}s/{repo_id}. Please make sure you specified the correct "
                "`repo_id` and `repo_type`.",
                "RepoNotFound",
            )
        return repo


# --------------------------------------------------------------------------------------------------------------------
# HTTP layer
# --------------------------------------------------------------------------------------------------------------------


@dataclass
class Request:
    method: str
    raw_path: str  # path, still percent-encoded
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    user: str | None

    def json(self) -> dict:
        try:
            data = json.loads(self.body.decode("utf-8") or "null")
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HubError(400, f"Request body is not valid JSON: {e}") from e
        if not isinstance(data, dict):
            raise HubError(400, "Request body must be a JSON object")
        return data

    def flag(self, name: str) -> bool:
        vals = self.query.get(name)
        return bool(vals) and vals[-1].lower() in ("1", "true", "yes")


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    content_length: int | None = None  # for HEAD: the length the GET body would have

    @classmethod
    def json(cls, data, status: int = 200, headers: dict | None = None, content_type="application/json") -> "Response":
        return cls(status, json.dumps(data).encode(), {"Content-Type": content_type, **(headers or {})})


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MiniHub/1.0"
    server: "_Server"

    def log_message(self, format, *args):  # silence the default stderr logging
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline().strip():  # trailers
                        pass
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self):
        hub: HubServer = self.server.hub
        split = urlsplit(self.path)
        req = Request(
            method=self.command,
            raw_path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=b"",
            user=None,
        )
        try:
            req.body = self._read_body() if self.command in ("POST", "PUT", "DELETE", "PATCH") else b""
            auth = req.headers.get("authorization", "")
            if auth:
                token = auth[7:] if auth.lower().startswith("bearer ") else ""
                req.user = hub.state.tokens.get(token)
                if req.user is None:
                    raise HubError(401, "Invalid credentials in Authorization header")
            resp = hub.dispatch(req, self)
        except HubError as e:
            body = {"error": e.message, **e.extra}
            headers = {"X-Error-Message": e.message.replace("\n", " "), **e.headers}
            if e.code:
                headers["X-Error-Code"] = e.code
            resp = Response.json(body, e.status, headers)
        except Exception as e:  # a bug in the server: show it to the client and in the log
            logger.exception("hub server crashed on %s %s", self.command, self.path)
            resp = Response.json({"error": f"Internal server error: {type(e).__name__}: {e}"}, 500)
        hub.record(req, resp, self.client_address)
        self.send_response(resp.status)
        length = resp.content_length if (self.command == "HEAD" and resp.content_length is not None) else len(resp.body)
        resp.headers.setdefault("Content-Length", str(length))
        for k, v in resp.headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD" and resp.body:
            self.wfile.write(resp.body)

    do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = do_PATCH = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    hub: "HubServer"

    # Track open connections: `shutdown()` only stops accepting, while handler threads would keep serving
    # keep-alive connections (the client pools them). `close_connections()` makes a stopped hub really gone.
    def server_activate(self):
        self._open: set = set()
        self._open_lock = threading.Lock()
        super().server_activate()

    def process_request(self, request, client_address):
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request):
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self):
        with self._open_lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


# --------------------------------------------------------------------------------------------------------------------
# The Hub
# --------------------------------------------------------------------------------------------------------------------

_API_REPO = r"/api/(?P<type>models|datasets|spaces)/(?P<ns>[^/]+)/(?P<name>[^/]+)"
_GIT_REPO = r"/(?:(?P<prefix>datasets|spaces)/)?(?P<ns>[^/]+)/(?P<name>[^/]+?)"


@dataclass
class LogEntry:
    method: str
    path: str
    status: int
    note: str = ""

    def __str__(self) -> str:
        return f"{self.method:6} {self.path} -> {self.status}{'  ' + self.note if self.note else ''}"


class HubServer:
    """Start with ``start()`` (or use as a context manager); ``url`` is the endpoint to give the client."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: dict[str, str] | None = None,
        lfs_threshold: int = LFS_SIZE_THRESHOLD,
        cdn_host: str | None = "localhost",
        orgs: tuple[str, ...] = ("test-org",),
    ):
        self.state = HubState(tokens if tokens is not None else {DEFAULT_TOKEN: DEFAULT_USER})
        self.lfs_threshold = lfs_threshold
        self.orgs = orgs  # organisations every valid token may write to
        self.request_log: list[LogEntry] = []
        self._httpd = _Server((host, port), _Handler)
        self._httpd.hub = self
        self.host, self.port = self._httpd.server_address[:2]
        self.url = f"http://{host}:{self.port}"
        # LFS downloads are redirected to a "CDN" on another origin (like the Hub's cdn-lfs / S3 redirects): the
        # client must then not follow the redirect during its HEAD and must drop the Authorization header. Using
        # "localhost" as that second origin works when it resolves to the host we listen on; otherwise LFS files
        # are served directly (200 + X-Linked-Etag) and the redirect is not exercised.
        self.cdn_url = self.url
        if cdn_host and cdn_host != host:
            try:
                addrs = {a[4][0] for a in socket.getaddrinfo(cdn_host, self.port, type=socket.SOCK_STREAM)}
            except OSError:
                addrs = set()
            if addrs == {host}:
                self.cdn_url = f"http://{cdn_host}:{self.port}"
        self._thread: threading.Thread | None = None
        self._pending_lfs: dict[str, int] = {}  # oid -> announced size (from the batch call)
        self.cdn_requests_with_auth: list[str] = []
        self._routes = [
            ("POST", r"/api/repos/create", self.create_repo),
            ("DELETE", r"/api/repos/delete", self.delete_repo),
            ("GET", r"/api/whoami-v2", self.whoami),
            ("GET", r"/api/agent-harnesses", self.agent_harnesses),
            ("POST", r"/api/validate-yaml", self.validate_yaml),
            ("GET", _API_REPO + r"(?:/revision/(?P<rev>[^/]+))?", self.repo_info),
            ("GET", _API_REPO + r"/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?", self.tree),
            ("POST", _API_REPO + r"/paths-info/(?P<rev>[^/]+)", self.paths_info),
            ("GET", _API_REPO + r"/refs", self.refs),
            ("GET", _API_REPO + r"/commits/(?P<rev>[^/]+)", self.commits),
            ("POST", _API_REPO + r"/branch/(?P<branch>[^/]+)", self.create_branch),
            ("DELETE", _API_REPO + r"/branch/(?P<branch>[^/]+)", self.delete_branch),
            ("POST", _API_REPO + r"/preupload/(?P<rev>[^/]+)", self.preupload),
            ("POST", _API_REPO + r"/commit/(?P<rev>[^/]+)", self.commit),
            ("POST", _GIT_REPO + r"\.git/info/lfs/objects/batch", self.lfs_batch),
            ("POST", _GIT_REPO + r"\.git/info/lfs/objects/verify", self.lfs_verify),
            ("PUT", r"/_lfs/upload/(?P<oid>[^/]+)", self.lfs_put),
            ("GET|HEAD", r"/_cdn/lfs/(?P<oid>[^/]+)", self.cdn_get),
            ("GET|HEAD", _GIT_REPO + r"/resolve/(?P<rev>[^/]+)/(?P<path>.+)", self.resolve),
        ]
        self._routes = [(m, re.compile(p + r"/?$"), h) for m, p, h in self._routes]

    # ---- lifecycle -------------------------------------------------------------------------------------------------

    def start(self) -> "HubServer":
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="hub-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving (idempotent). Later requests fail with a connection error, like an unreachable Hub."""
        if self._thread is None:
            return
        self._httpd.shutdown()
        self._httpd.server_close()
        self._httpd.close_connections()
        self._thread.join(timeout=5)
        self._thread = None

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ---- logging ---------------------------------------------------------------------------------------------------

    def record(self, req: Request, resp: Response, client) -> None:
        note = ""
        if resp.status >= 400:
            try:
                note = json.loads(resp.body).get("error", "")
            except Exception:
                note = resp.body[:200].decode("utf-8", "replace")
        elif resp.headers.get("Location"):
            note = f"Location: {resp.headers['Location']}"
        path = req.raw_path + (("?" + "&".join(f"{k}={v[-1]}" for k, v in req.query.items())) if req.query else "")
        entry = LogEntry(req.method, path, resp.status, note)
        with self.state.lock:
            self.request_log.append(entry)
        logger.info("%s", entry)

    def format_log(self) -> str:
        with self.state.lock:
            return "\n".join(str(e) for e in self.request_log)

    def requests(self, method: str | None = None, contains: str = "") -> list[LogEntry]:
        with self.state.lock:
            return [e for e in self.request_log if (method is None or e.method == method) and contains in e.path]

    # ---- helpers for tests -----------------------------------------------------------------------------------------

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.state.repos[(repo_type, repo_id)]

    def file_bytes(self, entry: FileEntry) -> bytes:
        return entry.content if entry.content is not None else self.state.lfs_objects[entry.lfs_oid]

    # ---- dispatch --------------------------------------------------------------------------------------------------

    def dispatch(self, req: Request, handler: _Handler) -> Response:
        for methods, pattern, fn in self._routes:
            m = pattern.match(req.raw_path)
            if m and req.method in methods.split("|"):
                params = {}
                for k, v in m.groupdict().items():
                    params[k] = unquote(v) if v is not None else None
                return fn(req, **params)
        if any(p.match(req.raw_path) for _, p, _ in self._routes):
            raise HubError(405, f"Method {req.method} not allowed on {req.raw_path}")
        raise HubError(404, f"Not found: {req.method} {req.raw_path} (not implemented by the test hub)")

    def _repo(self, req: Request, type: str | None = None, ns: str = "", name: str = "", prefix: str | None = None):
        repo_type = _REPO_TYPES[type] if type else ({"datasets": "dataset", "spaces": "space"}.get(prefix or "", "model"))
        return self.state.get_repo(repo_type, f"{ns}/{name}", req.user)

    def _require_write(self, req: Request, repo: Repo | None = None, namespace: str | None = None) -> None:
        if req.user is None:
            raise HubError(401, "Invalid username or password. You must be authenticated to write to the Hub.")
        ns = namespace if namespace is not None else repo.repo_id.split("/")[0]
        if ns not in (req.user, *self.orgs):
            raise HubError(403, f"You don't have the rights to write to the {ns!r} namespace")

    def repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}"

    # ---- repos -----------------------------------------------------------------------------------------------------

    def create_repo(self, req: Request) -> Response:
        data = req.json()
        name, org = data.get("name"), data.get("organization")
        if not isinstance(name, str) or not _REPO_NAME.match(name) or "--" in name or name.endswith((".git", ".")):
            raise HubError(400, f"Invalid repo name: {name!r}")
        namespace = org if org else req.user
        if org is not None and not (isinstance(org, str) and _REPO_NAME.match(org)):
            raise HubError(400, f"Invalid organization: {org!r}")
        repo_type = data.get("type") or "model"
        if repo_type not in _URL_PREFIX:
            raise HubError(400, f"Invalid repo type: {repo_type!r}")
        self._require_write(req, namespace=namespace or "")
        visibility = data.get("visibility", data.get("private"))
        private = visibility in ("private", True)
        repo_id = f"{namespace}/{name}"
        with self.state.lock:
            existing = self.state.repos.get((repo_type, repo_id))
            if existing is not None:
                raise HubError(409, "You already created this model repo", extra={"url": self.repo_url(existing)})
            repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now())
            ga = DEFAULT_GITATTRIBUTES.encode()
            sha = self.state.new_sha(repo_id, "initial commit")
            repo.commits[sha] = Commit(
                sha, [], "initial commit", "", _now(), req.user,
                {".gitattributes": FileEntry(".gitattributes", len(ga), git_blob_sha1(ga), content=ga)},
            )
            repo.branches["main"] = sha
            self.state.repos[(repo_type, repo_id)] = repo
        return Response.json({"url": self.repo_url(repo), "name": repo_id, "id": sha[:24]})

    def delete_repo(self, req: Request) -> Response:
        data = req.json()
        repo_type = data.get("type") or "model"
        repo_id = f"{data.get('organization') or req.user}/{data.get('name')}"
        repo = self.state.get_repo(repo_type, repo_id, req.user)
        self._require_write(req, repo)
        with self.state.lock:
            del self.state.repos[(repo_type, repo_id)]
        return Response.json({})

    def whoami(self, req: Request) -> Response:
        if req.user is None:
            raise HubError(401, "Invalid credentials in Authorization header")
        return Response.json(
            {"type": "user", "name": req.user, "fullname": req.user, "orgs": [{"name": o, "type": "org"} for o in self.orgs],
             "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}}}
        )

    def agent_harnesses(self, req: Request) -> Response:
        # huggingface_hub fetches this registry once per process to build its user-agent.
        return Response.json({"standardEnvVars": [], "harnesses": {}})

    def validate_yaml(self, req: Request) -> Response:
        data = req.json()
        content = data.get("content")
        if not isinstance(content, str):
            raise HubError(400, "`content` must be a string")
        if data.get("repoType", "model") not in _URL_PREFIX:
            raise HubError(400, f"Invalid repoType: {data.get('repoType')!r}")
        errors, warnings = _check_front_matter(content)
        if errors:
            return Response.json({"errors": [{"message": m} for m in errors], "warnings": []}, 400)
        return Response.json({"errors": [], "warnings": [{"message": m} for m in warnings]})

    # ---- read API --------------------------------------------------------------------------------------------------

    def repo_info(self, req: Request, type, ns, name, rev=None) -> Response:
        repo = self._repo(req, type, ns, name)
        with self.state.lock:
            commit = repo.resolve(rev or "main")
        blobs = req.flag("blobs")
        siblings = []
        for entry in sorted(commit.files.values(), key=lambda e: e.path):
            sib = {"rfilename": entry.path}
            if blobs:
                sib.update(size=entry.size, blobId=entry.blob_id)
                if entry.is_lfs:
                    sib["lfs"] = {"size": entry.size, "sha256": entry.lfs_oid,
                                  "pointerSize": len(lfs_pointer(entry.lfs_oid, entry.size))}
            siblings.append(sib)
        info = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0],
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            cfg = commit.files.get("config.json")
            if cfg is not None and cfg.content is not None:
                try:
                    config = json.loads(cfg.content)
                    info["config"] = {k: config[k] for k in ("architectures", "model_type", "auto_map") if k in config}
                except (ValueError, TypeError):
                    pass
        return Response.json(info)

    def tree(self, req: Request, type, ns, name, rev, path=None) -> Response:
        repo = self._repo(req, type, ns, name)
        with self.state.lock:
            commit = repo.resolve(rev)
        prefix = (path or "").strip("/")
        recursive = req.flag("recursive")
        entries = _list_tree(commit, prefix, recursive)
        if entries is None:
            raise HubError(404, f"Path {prefix!r} not found in {repo.repo_id}@{commit.sha}", "EntryNotFound")
        return Response.json(entries)

    def paths_info(self, req: Request, type, ns, name, rev) -> Response:
        repo = self._repo(req, type, ns, name)
        with self.state.lock:
            commit = repo.resolve(rev)
        ctype = req.headers.get("content-type", "")
        if "json" in ctype:
            paths = req.json().get("paths")
        else:
            paths = parse_qs(req.body.decode("utf-8"), keep_blank_values=True).get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise HubError(400, "`paths` must be a list of strings")
        out = []
        dirs = _all_dirs(commit)
        for p in paths:
            p = p.strip("/")
            if p in commit.files:
                out.append(commit.files[p].tree_json())
            elif p in dirs:
                out.append({"type": "directory", "oid": _tree_oid(commit, p), "size": 0, "path": p})
        return Response.json(out)

    def refs(self, req: Request, type, ns, name) -> Response:
        repo = self._repo(req, type, ns, name)
        with self.state.lock:
            items = sorted(repo.branches.items())
        branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": s} for b, s in items if not b.startswith("refs/")]
        prs = [{"name": b, "ref": b, "targetCommit": s} for b, s in items if b.startswith("refs/pr/")]
        out = {"branches": branches, "converts": [], "tags": []}
        if req.flag("include_prs"):
            out["pullRequests"] = prs
        return Response.json(out)

    def commits(self, req: Request, type, ns, name, rev) -> Response:
        repo = self._repo(req, type, ns, name)
        out = []
        with self.state.lock:
            commit: Commit | None = repo.resolve(rev)
            while commit is not None:
                out.append({"id": commit.sha, "title": commit.title, "message": commit.message, "date": commit.date,
                            "authors": [{"user": commit.author or "unknown"}], "parents": commit.parents})
                commit = repo.commits[commit.parents[0]] if commit.parents else None
        return Response.json(out)

    # ---- branches --------------------------------------------------------------------------------------------------

    def create_branch(self, req: Request, type, ns, name, branch) -> Response:
        repo = self._repo(req, type, ns, name)
        self._require_write(req, repo)
        data = req.json() if req.body else {}
        if not branch or branch.startswith(("refs/", "/")) or ".." in branch or " " in branch:
            raise HubError(400, f"Invalid branch name: {branch!r}")
        with self.state.lock:
            if branch in repo.branches:
                raise HubError(409, f"Reference refs/heads/{branch} already exists")
            start = repo.resolve(data.get("startingPoint") or "main")
            if data.get("emptyBranch"):
                raise HubError(400, "emptyBranch is not supported by the test hub")
            repo.branches[branch] = start.sha
        return Response.json({})

    def delete_branch(self, req: Request, type, ns, name, branch) -> Response:
        repo = self._repo(req, type, ns, name)
        self._require_write(req, repo)
        with self.state.lock:
            if branch not in repo.branches:
                raise HubError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if branch == "main":
                raise HubError(403, "Cannot delete the default branch")
            del repo.branches[branch]
        return Response.json({})

    # ---- upload ----------------------------------------------------------------------------------------------------

    def preupload(self, req: Request, type, ns, name, rev) -> Response:
        repo = self._repo(req, type, ns, name)
        self._require_write(req, repo)
        data = req.json()
        files = data.get("files")
        if not isinstance(files, list) or not files:
            raise HubError(400, "`files` must be a non-empty list")
        create_pr = req.flag("create_pr")
        with self.state.lock:
            commit = repo.resolve(rev) if not create_pr or rev in repo.branches else repo.resolve("main")
        gitattributes = commit.files.get(".gitattributes")
        lfs_patterns = _lfs_patterns(gitattributes.content if gitattributes else b"")
        out = []
        for f in files:
            if not (isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("size"), int)
                    and isinstance(f.get("sample"), str) and f["size"] >= 0):
                raise HubError(400, f"Invalid file entry in preupload payload: {str(f)[:200]}")
            try:
                sample = base64.b64decode(f["sample"], validate=True)
            except (binascii.Error, ValueError) as e:
                raise HubError(400, f"`sample` of {f['path']!r} is not valid base64") from e
            if len(sample) > 512 or len(sample) > f["size"]:
                raise HubError(400, f"`sample` of {f['path']!r} must be the first <=512 bytes of the file")
            path = f["path"]
            basename = path.rsplit("/", 1)[-1]
            is_lfs = (
                f["size"] >= self.lfs_threshold
                or any(fnmatch.fnmatchcase(basename, p) or fnmatch.fnmatchcase(path, p) for p in lfs_patterns)
                or b"\0" in sample
            )
            existing = commit.files.get(path)
            oid = None
            if existing is not None:
                oid = existing.lfs_oid if existing.is_lfs else existing.blob_id
            out.append({"path": path, "uploadMode": "lfs" if is_lfs else "regular", "shouldIgnore": False, "oid": oid})
        return Response.json({"files": out, "commitOid": commit.sha})

    def lfs_batch(self, req: Request, ns, name, prefix=None) -> Response:
        repo = self._repo(req, None, ns, name, prefix)
        if not req.headers.get("accept", "").startswith("application/vnd.git-lfs+json"):
            raise HubError(406, "LFS batch API requires Accept: application/vnd.git-lfs+json")
        data = req.json()
        if data.get("operation") not in ("upload", "download"):
            raise HubError(400, f"Invalid LFS operation: {data.get('operation')!r}")
        if data.get("operation") == "upload":
            self._require_write(req, repo)
        transfers = data.get("transfers") or ["basic"]
        if "basic" not in transfers:
            raise HubError(422, f"Unsupported transfer adapters {transfers}; this hub only speaks 'basic'")
        if data.get("hash_algo", "sha256") != "sha256":
            raise HubError(422, "Only sha256 is supported")
        objects = data.get("objects")
        if not isinstance(objects, list):
            raise HubError(400, "`objects` must be a list")
        if "ref" in data and not (isinstance(data["ref"], dict) and isinstance(data["ref"].get("name"), str)):
            raise HubError(400, "`ref` must be {'name': <revision>}")
        out = []
        for obj in objects:
            oid, size = obj.get("oid") if isinstance(obj, dict) else None, obj.get("size") if isinstance(obj, dict) else None
            if not (isinstance(oid, str) and _HEX64.match(oid) and isinstance(size, int) and size >= 0):
                out.append({"oid": str(oid), "size": size if isinstance(size, int) else 0,
                            "error": {"code": 422, "message": "oid must be a 64-char lowercase sha256, size an int"}})
                continue
            with self.state.lock:
                present = oid in self.state.lfs_objects
                if not present and data["operation"] == "upload":
                    self._pending_lfs[oid] = size
            item = {"oid": oid, "size": size, "authenticated": True}
            if data["operation"] == "download":
                if not present:
                    item["error"] = {"code": 404, "message": "Object does not exist"}
                else:
                    item["actions"] = {"download": {"href": f"{self.cdn_url}/_cdn/lfs/{oid}"}}
            elif not present:
                item["actions"] = {
                    "upload": {"href": f"{self.url}/_lfs/upload/{oid}?size={size}", "header": {}},
                    "verify": {"href": f"{self.url}/{_URL_PREFIX[repo.repo_type]}{repo.repo_id}.git/info/lfs/objects/verify"},
                }
            out.append(item)
        return Response.json({"transfer": "basic", "objects": out}, content_type="application/vnd.git-lfs+json")

    def lfs_put(self, req: Request, oid) -> Response:
        if not _HEX64.match(oid):
            raise HubError(400, f"Invalid LFS oid {oid!r}")
        with self.state.lock:
            announced = self._pending_lfs.get(oid)
        if announced is None and oid not in self.state.lfs_objects:
            raise HubError(403, f"No pending upload for LFS object {oid} (call the batch endpoint first)")
        size_q = req.query.get("size", [None])[-1]
        expected_size = announced if announced is not None else int(size_q) if size_q else None
        body = req.body
        actual = hashlib.sha256(body).hexdigest()
        if actual != oid:
            raise HubError(400, f"LFS object sha256 mismatch: expected {oid}, got {actual} ({len(body)} bytes)")
        if expected_size is not None and len(body) != expected_size:
            raise HubError(400, f"LFS object size mismatch for {oid}: expected {expected_size}, got {len(body)}")
        with self.state.lock:
            self.state.lfs_objects[oid] = body
            self._pending_lfs.pop(oid, None)
        return Response(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def lfs_verify(self, req: Request, ns, name, prefix=None) -> Response:
        self._repo(req, None, ns, name, prefix)
        data = req.json()
        oid, size = data.get("oid"), data.get("size")
        with self.state.lock:
            stored = self.state.lfs_objects.get(oid) if isinstance(oid, str) else None
        if stored is None:
            raise HubError(404, f"LFS object {oid} was not uploaded")
        if size != len(stored):
            raise HubError(422, f"LFS object {oid} has size {len(stored)}, not {size}")
        return Response.json({"success": True})

    def commit(self, req: Request, type, ns, name, rev) -> Response:
        repo = self._repo(req, type, ns, name)
        self._require_write(req, repo)
        ctype = req.headers.get("content-type", "")
        if not ctype.startswith("application/x-ndjson"):
            raise HubError(400, f"Commit payload must be application/x-ndjson, got {ctype!r}")
        lines = [ln for ln in req.body.split(b"\n") if ln.strip()]
        if not lines:
            raise HubError(400, "Empty commit payload")
        items = []
        for i, ln in enumerate(lines):
            try:
                item = json.loads(ln)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise HubError(400, f"Line {i + 1} of the commit payload is not JSON: {e}") from e
            if not (isinstance(item, dict) and isinstance(item.get("key"), str) and isinstance(item.get("value"), dict)):
                raise HubError(400, f"Line {i + 1} must be {{'key': str, 'value': object}}")
            items.append(item)
        if items[0]["key"] != "header":
            raise HubError(400, "The first line of the commit payload must be the 'header'")
        header = items[0]["value"]
        summary = header.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise HubError(400, "Commit summary (header.summary) must be a non-empty string")
        description = header.get("description", "")
        if not isinstance(description, str):
            raise HubError(400, "header.description must be a string")
        create_pr = req.flag("create_pr")

        with self.state.lock:
            if create_pr:
                base = repo.resolve(rev)
                target_branch = None
            else:
                if rev not in repo.branches:
                    # The Hub only commits on branches (a commit sha is not a valid target).
                    raise HubError(404, f"Invalid rev id: {rev} (commits can only be made to a branch)", "RevisionNotFound")
                base = repo.commits[repo.branches[rev]]
                target_branch = rev
            parent_commit = header.get("parentCommit")
            if parent_commit is not None and parent_commit != base.sha:
                raise HubError(412, f"A commit has happened since. Please refresh and try again. "
                                    f"(parentCommit {parent_commit} != head {base.sha})")
            files = dict(base.files)
            for i, item in enumerate(items[1:], start=2):
                key, value = item["key"], item["value"]
                path = value.get("path")
                if not isinstance(path, str) or not path or path.startswith("/") or ".." in path.split("/"):
                    raise HubError(400, f"Line {i}: invalid path {path!r}")
                if key == "header":
                    raise HubError(400, f"Line {i}: duplicate header")
                elif key == "file":
                    if value.get("encoding") != "base64" or not isinstance(value.get("content"), str):
                        raise HubError(400, f"Line {i}: 'file' needs base64 'content' and encoding='base64'")
                    try:
                        content = base64.b64decode(value["content"], validate=True)
                    except (binascii.Error, ValueError) as e:
                        raise HubError(400, f"Line {i}: content of {path!r} is not valid base64") from e
                    if len(content) > self.lfs_threshold:
                        raise HubError(400, f"{path!r} is {len(content)} bytes: files above "
                                            f"{self.lfs_threshold} bytes must be uploaded with LFS")
                    files[path] = FileEntry(path, len(content), git_blob_sha1(content), content=content)
                elif key == "lfsFile":
                    oid = value.get("oid")
                    if value.get("algo", "sha256") != "sha256" or not isinstance(oid, str) or not _HEX64.match(oid):
                        raise HubError(400, f"Line {i}: lfsFile {path!r} needs algo='sha256' and a 64-hex oid")
                    stored = self.state.lfs_objects.get(oid)
                    if stored is None:
                        raise HubError(422, f"LFS object {oid} for {path!r} has not been uploaded "
                                            "(call the LFS batch endpoint and PUT the content first)")
                    if "size" in value and value["size"] != len(stored):
                        raise HubError(422, f"lfsFile {path!r}: size {value['size']} != uploaded {len(stored)}")
                    ptr = lfs_pointer(oid, len(stored))
                    files[path] = FileEntry(path, len(stored), git_blob_sha1(ptr), lfs_oid=oid)
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del files[p]
                else:
                    raise HubError(400, f"Line {i}: unknown operation key {key!r}")
            sha = self.state.new_sha(repo.repo_id, base.sha, summary, description, _now())
            repo.commits[sha] = Commit(sha, [base.sha], summary, description, _now(), req.user, files)
            pr_url = None
            if create_pr:
                repo.pr_count += 1
                repo.branches[f"refs/pr/{repo.pr_count}"] = sha
                pr_url = f"{self.repo_url(repo)}/discussions/{repo.pr_count}"
            else:
                repo.branches[target_branch] = sha
        return Response.json(
            {"success": True, "commitOid": sha, "commitUrl": f"{self.repo_url(repo)}/commit/{sha}",
             "pullRequestUrl": pr_url, "hookOutput": None}
        )

    # ---- download --------------------------------------------------------------------------------------------------

    def resolve(self, req: Request, ns, name, rev, path, prefix=None) -> Response:
        repo = self._repo(req, None, ns, name, prefix)
        with self.state.lock:
            commit = repo.resolve(rev)
        entry = commit.files.get(path)
        if entry is None:
            raise HubError(404, f"Entry not found: {path} in {repo.repo_id}@{commit.sha}", "EntryNotFound",
                           headers={"X-Repo-Commit": commit.sha})
        headers = {"X-Repo-Commit": commit.sha, "Accept-Ranges": "bytes",
                   "Content-Disposition": f'inline; filename="{quote(path.rsplit("/", 1)[-1])}"'}
        if entry.is_lfs:
            headers.update({"ETag": f'"{entry.blob_id}"', "X-Linked-Etag": f'"{entry.lfs_oid}"',
                            "X-Linked-Size": str(entry.size)})
            if self.cdn_url != self.url:
                location = f"{self.cdn_url}/_cdn/lfs/{entry.lfs_oid}?filename={quote(path.rsplit('/', 1)[-1])}"
                return Response(302, b"", {**headers, "Location": location, "Content-Type": "text/plain"})
            data = self.state.lfs_objects[entry.lfs_oid]
        else:
            headers["ETag"] = f'"{entry.blob_id}"'
            data = entry.content
        return _bytes_response(req, data, headers)

    def cdn_get(self, req: Request, oid) -> Response:
        with self.state.lock:
            data = self.state.lfs_objects.get(oid)
        if data is None:
            raise HubError(404, "NoSuchKey")
        if req.headers.get("authorization"):
            # The client must not forward Hub credentials to another origin: tests can assert on this list.
            with self.state.lock:
                self.cdn_requests_with_auth.append(req.raw_path)
        return _bytes_response(req, data, {"ETag": f'"{oid}"'})


# --------------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------------


def _bytes_response(req: Request, data: bytes, headers: dict) -> Response:
    headers = {"Content-Type": "application/octet-stream", **headers}
    rng = req.headers.get("range")
    if rng:
        m = re.match(r"bytes=(\d*)-(\d*)$", rng.strip())
        if not m or (not m.group(1) and not m.group(2)):
            raise HubError(416, f"Invalid range {rng!r}")
        if m.group(1):
            start = int(m.group(1))
            end = int(m.group(2)) if m.group(2) else len(data) - 1
        else:
            start, end = max(len(data) - int(m.group(2)), 0), len(data) - 1
        if start >= len(data) or end < start:
            raise HubError(416, f"Range {rng!r} not satisfiable for {len(data)} bytes")
        end = min(end, len(data) - 1)
        headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        part = data[start : end + 1]
        return Response(206, part if req.method == "GET" else b"", headers, content_length=len(part))
    return Response(200, data if req.method == "GET" else b"", headers, content_length=len(data))


def _lfs_patterns(gitattributes: bytes) -> list[str]:
    patterns = []
    for line in gitattributes.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0].lstrip("/"))
    return patterns


def _all_dirs(commit: Commit) -> set[str]:
    dirs = set()
    for p in commit.files:
        parts = p.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    return dirs


def _tree_oid(commit: Commit, prefix: str) -> str:
    h = hashlib.sha1(b"tree\0")
    for p in sorted(commit.files):
        if p.startswith(prefix + "/"):
            h.update(p.encode() + b"\0" + commit.files[p].blob_id.encode())
    return h.hexdigest()


def _list_tree(commit: Commit, prefix: str, recursive: bool) -> list[dict] | None:
    dirs = _all_dirs(commit)
    if prefix and prefix not in dirs:
        return None
    base = prefix + "/" if prefix else ""
    out: list[dict] = []
    for d in sorted(dirs):
        if d.startswith(base) and (recursive or "/" not in d[len(base):]):
            out.append({"type": "directory", "oid": _tree_oid(commit, d), "size": 0, "path": d})
    for p in sorted(commit.files):
        if p.startswith(base) and (recursive or "/" not in p[len(base):]):
            out.append(commit.files[p].tree_json())
    return out


def _check_front_matter(content: str) -> tuple[list[str], list[str]]:
    """Light structural YAML check of a README front matter (stdlib only: no YAML parser).

    Errors: an unterminated ``---`` block, tab indentation, a top-level line that is neither ``key: ...``,
    a list item, a comment nor a continuation. Warning: no metadata at all (the Hub warns about that too).
    """
    lines = content.splitlines()
    if not lines or lines[0].strip() != "---":
        return [], ["Empty or missing yaml metadata in repo card"]
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        return ["YAML metadata block is not closed by a '---' line"], []
    errors, keys = [], []
    for n, line in enumerate(lines[1:end], start=2):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        if "\t" in line[: len(line) - len(line.lstrip())]:
            errors.append(f"line {n}: tab used for indentation")
        elif not line[0].isspace() and not line.startswith("- "):
            m = re.match(r"^([A-Za-z0-9_\-]+|'[^']*'|\"[^\"]*\")\s*:(\s|$)", line)
            if not m:
                errors.append(f"line {n}: expected 'key: value', got {line[:60]!r}")
            else:
                keys.append(m.group(1))
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        errors.append(f"duplicated keys in metadata: {dup}")
    return errors, ([] if keys else ["Empty or missing yaml metadata in repo card"])


if __name__ == "__main__":  # manual use: python tests/hub/hub_server.py
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    srv = HubServer(port=8765).start()
    print(f"Test hub on {srv.url}  (token: {DEFAULT_TOKEN})")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        srv.stop()
