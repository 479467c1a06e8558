"""Share MMSA checkpoints on the Hugging Face Hub, and load them back safely.

* :func:`push_to_hub` — one commit holding ``model.safetensors``, ``config.json`` (with ``auto_map``) and the
  modeling code, the processor config + processing code, and a generated ``README.md`` model card.
* :func:`save_for_hub` — the same folder, written locally (what :func:`push_to_hub` uploads).
* :func:`verify_checkpoint` — opens every safetensors weight file with ``safetensors`` itself (header, offsets,
  sizes against the file length) and compares Hub-cache blobs with their sha256. safetensors raises
  ``SafetensorError: Error while deserializing header: incomplete metadata, file not fully covered`` on a truncated
  file without saying which file: that error is re-raised as :class:`CorruptCheckpointError` naming the file.
* :func:`verify_manifest` — compares every weight file with the sha256 recorded in the checkpoint's
  ``checksums.json`` (written by ``save_pretrained``, the training scripts and :func:`push_to_hub`), which catches
  silent damage inside the tensor data of a local checkpoint too, and names the damaged file. A checkpoint
  without a manifest (saved elsewhere) still loads, with a one-line notice. For a Hub download the sha256 that
  the Hub reports for each LFS weight file is compared as well (when online).
* :func:`load_model` / :func:`load_processor` / :func:`resolve_checkpoint_dir` — resolve a Hub repo (any revision,
  cache-only when offline) or a local directory, verify the weights, then ``from_pretrained`` with
  ``use_safetensors=True``: loading never unpickles (a directory holding only ``pytorch_model.bin`` is refused).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import re
import struct
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "CorruptCheckpointError",
    "verify_checkpoint",
    "verify_manifest",
    "resolve_checkpoint_dir",
    "load_model",
    "load_processor",
    "save_for_hub",
    "push_to_hub",
    "DEFAULT_COMMIT_MESSAGE",
]

DEFAULT_COMMIT_MESSAGE = "Upload MMSA model, processor and model card"

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
PICKLE_WEIGHT_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "model.ckpt", "model.pt", "model.pth")

_SAFETENSORS_ERROR_PREFIX = "Error while deserializing header: "
_SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")
_COMMIT_SHA = re.compile(r"^[0-9a-f]{40}$")
logger = logging.getLogger(__name__)


class CorruptCheckpointError(OSError):
    """A weights file is missing, truncated, or corrupted. ``path`` is the offending file."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(
            f"Corrupted or incomplete checkpoint file {self.path}: {reason}. Delete it and download / save it again "
            "(for a Hub cache, pass force_download=True)."
        )


# ------------------------------------------------------------------------------------------------------------------
# verification
# ------------------------------------------------------------------------------------------------------------------


def _read_safetensors_names(path: Path, check_hash: bool) -> list[str]:
    """Open one ``.safetensors`` file with ``safetensors`` and return its tensor names.

    ``safe_open`` checks the header, every tensor's byte span and that the spans cover the file exactly. Its
    ``SafetensorError`` names no file: it is re-raised as :class:`CorruptCheckpointError` naming ``path``. With
    ``check_hash``, a file in a Hub cache is also compared with the sha256 its blob is named after.
    """
    from safetensors import SafetensorError, safe_open

    if not path.exists():
        dangling = " (dangling symlink)" if path.is_symlink() else ""
        raise CorruptCheckpointError(path, f"the file does not exist{dangling}")
    try:
        with safe_open(path, framework="pt") as weights:
            names = list(weights.keys())
    except SafetensorError as err:
        raise CorruptCheckpointError(path, _describe_safetensors_error(path, err)) from err
    if check_hash:
        _check_cache_blob_hash(path)
    return names


def _describe_safetensors_error(path: Path, err: Exception) -> str:
    """safetensors' reason for rejecting ``path``, with the byte counts that tell truncation from other damage.

    safetensors reports a file cut inside its header as "invalid header length" and a file cut (or padded) inside
    the tensor data as "incomplete metadata"; the file length and the 8-byte header length say which it is.
    """
    reason = str(err).removeprefix(_SAFETENSORS_ERROR_PREFIX)
    size = path.stat().st_size
    if size < 8:
        return f"the file holds {size} bytes, less than the 8-byte safetensors header length"
    with open(path, "rb") as handle:
        (header_length,) = struct.unpack("<Q", handle.read(8))
        if "header too large" in reason:
            return f"invalid header length {header_length} (not a safetensors file?)"
        if 8 + header_length > size:
            return f"truncated: the header needs {8 + header_length} bytes but the file holds {size}"
        header_bytes = handle.read(header_length)
    if reason.startswith("invalid JSON"):
        return f"the header is not valid JSON ({reason})"
    if "incomplete metadata" in reason or "for tensor" in reason:
        return _describe_tensor_spans(json.loads(header_bytes), size - 8 - header_length) or reason
    return reason


def _describe_tensor_spans(header: dict[str, Any], data_length: int) -> str | None:
    """Name the first tensor whose byte span does not fit its dtype and shape, else compare the tensor data the
    header declares with the ``data_length`` bytes that follow it. Only called on a header safetensors parsed."""
    declared = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        bits = 8 if dtype == "BOOL" else int(re.search(r"\d+", dtype).group())  # F32 -> 32, F8_E4M3 -> 8, C64 -> 64
        needed = (math.prod(shape) * bits + 7) // 8
        if end - begin != needed:
            return f"tensor {name!r} ({dtype} {shape}) needs {needed} bytes but its offsets span {end - begin}"
        declared = max(declared, end)
    if declared > data_length:
        return (f"truncated: the header declares {declared} bytes of tensor data but the file holds {data_length} "
                f"({declared - data_length} missing)")
    if declared < data_length:
        return f"the file holds {data_length - declared} trailing bytes after the {declared} bytes of tensor data"
    return None


def _check_cache_blob_hash(path: Path) -> None:
    """In a Hub cache, LFS files are stored as ``blobs/<sha256>``: compare the content with its name."""
    try:
        target = path.resolve(strict=True)
    except OSError:
        return
    if target.parent.name != "blobs" or not _SHA256_NAME.match(target.name):
        return
    digest = _sha256(target)
    if digest != target.name:
        raise CorruptCheckpointError(
            path, f"its content (sha256 {digest}) does not match the Hub's sha256 {target.name} (blob {target})"
        )


def _sha256(path: Path) -> str:
    """sha256 of a file, remembered for an unchanged file (same inode, size and mtime) within the process."""
    from .modeling.checksums import sha256_cached

    return sha256_cached(path)


def verify_manifest(directory: str | os.PathLike, files: list[Path] | None = None) -> bool:
    """Compare the weight files of ``directory`` with its ``checksums.json``.

    Every file the manifest lists must exist with the recorded size and sha256, and every file of ``files`` (the
    weights :func:`verify_checkpoint` found) must be listed. Returns True when verified, False (after a one-line
    notice, once per directory) when the checkpoint has no manifest. Raises :class:`CorruptCheckpointError`
    naming the file.
    """
    from .modeling.checksums import MANIFEST_NAME, ChecksumMismatchError, read_manifest, verify_directory

    directory = Path(directory)
    try:
        if not verify_directory(directory, notice=logger.warning):
            return False
    except ChecksumMismatchError as err:
        raise CorruptCheckpointError(err.path, err.reason) from None
    records = read_manifest(directory)
    unlisted = [path for path in files or [] if path.name not in records]
    if unlisted:
        raise CorruptCheckpointError(unlisted[0], f"it is not listed in {directory / MANIFEST_NAME}, which records "
                                                  f"{sorted(records)}; save the checkpoint again")
    return True


def _check_hub_lfs_sha256(repo_id: str, directory: Path, files: list[Path], token: str | bool | None) -> None:
    """Compare downloaded weight files with the sha256 the Hub reports for them as LFS files (online only)."""
    from huggingface_hub import HfApi, constants

    if constants.HF_HUB_OFFLINE or not _COMMIT_SHA.match(directory.name):
        return
    try:
        infos = HfApi(token=token).get_paths_info(repo_id, [f.name for f in files], revision=directory.name)
    except Exception as err:  # noqa: BLE001 - an optional extra check; the download itself already succeeded
        logger.debug("could not read the LFS sha256 of %s from the Hub: %s", repo_id, err)
        return
    for info in infos:
        lfs = getattr(info, "lfs", None)
        expected = getattr(lfs, "sha256", None)
        if expected and _sha256(directory / info.path) != expected:
            raise CorruptCheckpointError(
                directory / info.path, f"its sha256 {_sha256(directory / info.path)} differs from the sha256 "
                f"{expected} the Hub reports for {repo_id}@{directory.name}"
            )


def verify_checkpoint(path: str | os.PathLike, *, check_hash: bool = True) -> list[Path]:
    """Validate the safetensors weights of a checkpoint directory (or one ``.safetensors`` file).

    ``model.safetensors``, or every shard of ``model.safetensors.index.json``, is opened with ``safetensors``, which
    checks that the header parses, every tensor's byte span matches its dtype and shape, and the spans cover the
    file exactly (so truncation or trailing garbage is caught); the index's tensors must all be in some shard. For
    files that live in a Hugging Face cache (``blobs/<sha256>``) the content's sha256 is compared with the blob name
    (``check_hash``), which also catches corruption inside the tensor data. For a directory, ``check_hash`` also
    compares every weight file with the sha256 recorded in its ``checksums.json`` (:func:`verify_manifest`; a
    one-line notice when there is none).

    Returns the verified files. Raises :class:`CorruptCheckpointError` (an ``OSError``) naming the bad file, or
    ``FileNotFoundError`` if there are no safetensors weights (mentioning pickled weights if only those exist).
    """
    path = Path(path)
    if path.is_file() or (path.suffix == ".safetensors" and not path.is_dir()):
        _read_safetensors_names(path, check_hash)
        return [path]
    files = _verify_weight_files(path, check_hash)
    if check_hash:
        verify_manifest(path, files)
    return files


def _verify_weight_files(directory: Path, check_hash: bool) -> list[Path]:
    """Open the safetensors weights of ``directory`` (single file or sharded); return the weight files."""
    if not directory.is_dir():
        raise FileNotFoundError(f"No checkpoint directory or file at {directory}")
    single, index = directory / SAFETENSORS_NAME, directory / SAFETENSORS_INDEX_NAME
    if single.exists() or single.is_symlink():
        _read_safetensors_names(single, check_hash)
        return [single]
    if index.exists() or index.is_symlink():
        return _verify_shards(index, check_hash)
    pickled = [name for name in PICKLE_WEIGHT_NAMES if (directory / name).exists()]
    if pickled:
        raise FileNotFoundError(
            f"{directory} has no {SAFETENSORS_NAME}, only pickled weights ({', '.join(pickled)}); mmsa_hf never "
            "unpickles weights. Convert them to safetensors with a trusted torch.load + save_pretrained."
        )
    raise FileNotFoundError(f"No {SAFETENSORS_NAME} (or {SAFETENSORS_INDEX_NAME}) in {directory}")


def _verify_shards(index: Path, check_hash: bool) -> list[Path]:
    """Open every shard named by the ``model.safetensors.index.json`` at ``index``; every tensor of its weight map
    must be in a shard. Returns the shard files."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
        assert isinstance(weight_map, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
        raise CorruptCheckpointError(index, f"not a valid safetensors index ({e!r})") from None
    shards = [index.parent / shard for shard in sorted(set(weight_map.values()))]
    names_in_shards: set[str] = set()
    for shard in shards:
        names_in_shards.update(_read_safetensors_names(shard, check_hash))
    missing = sorted(set(weight_map) - names_in_shards)
    if missing:
        raise CorruptCheckpointError(index, f"{len(missing)} tensors listed in the index are in no shard "
                                            f"(e.g. {missing[:3]})")
    return shards


# ------------------------------------------------------------------------------------------------------------------
# loading
# ------------------------------------------------------------------------------------------------------------------


def _is_local(repo_or_dir: str | os.PathLike) -> bool:
    """A Path, an existing directory, or something that cannot be a ``namespace/name`` repo id."""
    if isinstance(repo_or_dir, os.PathLike):
        return True
    text = str(repo_or_dir)
    return (
        os.path.isdir(text)
        or text.startswith(("/", "./", "../", "~", "."))
        or text.count("/") > 1
        or (os.sep != "/" and os.sep in text)
    )


def resolve_checkpoint_dir(
    repo_or_dir: str | os.PathLike,
    revision: str | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
) -> Path:
    """A local directory as is, or the snapshot of a Hub repo at ``revision`` (branch, tag or commit sha).

    Uses ``snapshot_download``: offline (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``) it returns the cached
    snapshot of the revision. Hub errors propagate (``RepositoryNotFoundError`` names the repo URL,
    ``RevisionNotFoundError``, ``LocalEntryNotFoundError`` when offline and not cached).
    """
    if _is_local(repo_or_dir):
        p = Path(repo_or_dir)
        if not p.is_dir():
            raise FileNotFoundError(f"Checkpoint directory {p} does not exist")
        if revision is not None:
            raise ValueError(f"revision={revision!r} only applies to Hub repos, not to the local directory {p}")
        return p
    from huggingface_hub import snapshot_download

    kwargs: dict[str, Any] = {"revision": revision, "cache_dir": cache_dir, "token": token,
                              "force_download": force_download}
    if local_files_only is not None:
        kwargs["local_files_only"] = local_files_only
    return Path(snapshot_download(str(repo_or_dir), **kwargs))


def load_model(
    repo_or_dir: str | os.PathLike,
    revision: str | None = None,
    *,
    model_class=None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    force_download: bool = False,
    check_hash: bool = True,
    **from_pretrained_kwargs,
):
    """Resolve ``repo_or_dir`` (Hub repo id at ``revision``, or a local dir), verify its safetensors, load it.

    ``model_class`` defaults to ``transformers.AutoModel`` (pass e.g. ``MMSAForMolecularPropertyPrediction`` or
    ``AutoModelForSequenceClassification``). Extra kwargs go to ``from_pretrained`` (``trust_remote_code=True`` to
    use the repo's code without ``mmsa_hf`` installed). ``use_safetensors=True`` is forced: nothing is unpickled.
    """
    directory = resolve_checkpoint_dir(repo_or_dir, revision, cache_dir=cache_dir, local_files_only=local_files_only,
                                       token=token, force_download=force_download)
    files = verify_checkpoint(directory, check_hash=check_hash)
    if check_hash and not _is_local(repo_or_dir) and not local_files_only:
        _check_hub_lfs_sha256(str(repo_or_dir), directory, files, token)
    if from_pretrained_kwargs.get("use_safetensors") is False:
        raise ValueError("mmsa_hf.hub.load_model only loads safetensors weights (use_safetensors=False refused)")
    from_pretrained_kwargs["use_safetensors"] = True
    if model_class is None:
        from transformers import AutoModel as model_class
    model = _from_pretrained_naming_the_file(model_class, directory, files, from_pretrained_kwargs)
    if not _is_local(repo_or_dir):  # report the repo id, not the cache path, as the model's origin
        model.config._name_or_path = str(repo_or_dir)
    return model


def _from_pretrained_naming_the_file(model_class, directory: Path, files: list[Path], kwargs: dict[str, Any]):
    """``model_class.from_pretrained(directory, **kwargs)``, with a ``SafetensorError`` (which names no file, e.g.
    for weights damaged after :func:`verify_checkpoint` ran) re-raised as :class:`CorruptCheckpointError` naming the
    weight file (the directory when the weights are sharded)."""
    from safetensors import SafetensorError

    try:
        return model_class.from_pretrained(directory, **kwargs)
    except SafetensorError as err:
        weights = files[0] if len(files) == 1 else directory
        raise CorruptCheckpointError(weights, str(err).removeprefix(_SAFETENSORS_ERROR_PREFIX)) from err


def load_processor(
    repo_or_dir: str | os.PathLike,
    revision: str | None = None,
    *,
    processor_class=None,
    cache_dir: str | os.PathLike | None = None,
    local_files_only: bool | None = None,
    token: str | bool | None = None,
    **from_pretrained_kwargs,
):
    """Resolve ``repo_or_dir`` like :func:`load_model` and load its processor (``AutoProcessor`` by default)."""
    directory = resolve_checkpoint_dir(repo_or_dir, revision, cache_dir=cache_dir, local_files_only=local_files_only,
                                       token=token)
    if processor_class is None:
        from transformers import AutoProcessor as processor_class
    return processor_class.from_pretrained(directory, **from_pretrained_kwargs)


# ------------------------------------------------------------------------------------------------------------------
# saving / pushing
# ------------------------------------------------------------------------------------------------------------------


def _is_library_class(cls) -> bool:
    """Whether ``cls`` ships with transformers (its code is never copied into a checkpoint)."""
    return cls.__module__.split(".")[0] == "transformers"


def _save_processor_with_code(processor, folder: Path) -> None:
    """``processor.save_pretrained(folder)`` with the processing code files copied next to it and ``auto_map``
    written into ``processor_config.json``, so ``AutoProcessor.from_pretrained(repo, trust_remote_code=True)`` works
    without ``mmsa_hf``.

    The MMSA model and config classes are registered for their Auto classes at import; the processor is not (a
    plain ``save_pretrained`` of it writes no code). Its registration is set on a copy only: ``ProcessorMixin``
    writes ``auto_map`` onto the processor and its sub-processors, and the caller's objects and classes stay as they
    are. ``MMSAProcessor`` rebuilds its sub-processors itself, and their code is copied as relative imports of
    ``processing_mmsa.py``.
    """
    processor = copy.deepcopy(processor)
    if not _is_library_class(type(processor)) and getattr(processor, "_auto_class", None) is None:
        processor._auto_class = "AutoProcessor"
    processor.save_pretrained(folder)


def save_for_hub(
    model,
    processor,
    save_directory: str | os.PathLike,
    *,
    training_info: Mapping[str, Any] | None = None,
    results: Any = None,
    repo_id: str | None = None,
    model_card: str | None = None,
    **card_kwargs,
) -> list[str]:
    """Write everything :func:`push_to_hub` uploads into ``save_directory``; return the relative file names.

    ``model.save_pretrained`` writes the safetensors, ``config.json`` with ``auto_map`` and the modeling code (the
    MMSA classes are registered for their Auto classes at import), and the processor is saved with its processing
    code and ``auto_map`` (``trust_remote_code`` loading without ``mmsa_hf``). The README.md model card is
    generated from ``training_info`` / ``results`` unless ``model_card`` is given; ``training_info.json`` /
    ``results.json`` are written next to it when given. ``processor`` may be None. Use an empty directory: every
    file in it is listed (and uploaded by :func:`push_to_hub`).
    """
    from .model_card import generate_model_card
    from .modeling.checksums import MANIFEST_NAME, write_manifest

    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder)
    if processor is not None:
        _save_processor_with_code(processor, folder)
    if not (folder / MANIFEST_NAME).exists():  # a model class whose save_pretrained does not write it
        write_manifest(folder)
    if processor is not None and not _is_library_class(type(model)):
        from .pipelines import add_custom_pipelines

        add_custom_pipelines(folder)  # pipeline(task, model=repo, trust_remote_code=True) without mmsa_hf
    verify_checkpoint(folder, check_hash=False)
    card = model_card if model_card is not None else generate_model_card(
        model, processor, training_info=training_info, results=results, repo_id=repo_id, **card_kwargs
    )
    (folder / "README.md").write_text(card, encoding="utf-8")
    for name, payload in (("training_info.json", training_info), ("results.json", results)):
        if payload:
            (folder / name).write_text(json.dumps(payload, indent=2, default=str) + "\n")
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def push_to_hub(
    model,
    processor=None,
    repo_id: str | None = None,
    revision: str | None = None,
    private: bool | None = None,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    training_info: Mapping[str, Any] | None = None,
    results: Any = None,
    token: str | bool | None = None,
    *,
    commit_description: str | None = None,
    create_pr: bool = False,
    endpoint: str | None = None,
    delete_stale_files: bool = False,
    **card_kwargs,
):
    """Push model + processor + model card to ``repo_id`` in ONE commit; return the ``CommitInfo``.

    The repo is created if needed (``private`` only applies then), and ``revision`` names the target branch, created
    from ``main`` if it does not exist. The files are those of :func:`save_for_hub`. With ``delete_stale_files``,
    files of the branch that this upload no longer produces (an old shard, a renamed code file) are deleted
    in the same commit, except ``.gitattributes``. ``commit_info.oid`` is the new commit sha (pin it with
    ``revision=``). If nothing changed, the Hub client makes no commit and returns the branch head.

    Implemented as ``create_repo(exist_ok=True)`` + one ``create_commit`` with an explicit list of operations rather
    than ``upload_folder``: with ``hf_xet`` installed, ``upload_folder`` switches to a pipelined upload that may
    split a folder into several commits, and the explicit list also carries the optional deletions.
    """
    if repo_id is None:
        raise TypeError("push_to_hub() needs a repo_id ('namespace/name')")
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi
    from huggingface_hub.errors import RevisionNotFoundError

    api = HfApi(endpoint=endpoint, token=token)
    repo_url = api.create_repo(repo_id, private=private, exist_ok=True)
    repo_id = repo_url.repo_id or repo_id
    branch = revision or "main"
    if branch != "main":
        if re.fullmatch(r"[0-9a-f]{40}", branch):
            raise ValueError(f"revision={branch!r} looks like a commit sha: commits can only be pushed to a branch")
        api.create_branch(repo_id, branch=branch, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="mmsa-push-") as tmp:
        files = save_for_hub(model, processor, tmp, training_info=training_info, results=results, repo_id=repo_id,
                             **card_kwargs)
        operations: list = [CommitOperationAdd(path_in_repo=f, path_or_fileobj=os.path.join(tmp, f)) for f in files]
        if delete_stale_files:
            try:
                remote = api.list_repo_files(repo_id, revision=branch)
            except RevisionNotFoundError:
                remote = []
            keep = set(files) | {".gitattributes"}
            operations += [CommitOperationDelete(path_in_repo=f) for f in remote if f not in keep]
        return api.create_commit(
            repo_id,
            operations,
            commit_message=commit_message,
            commit_description=commit_description,
            revision=branch,
            create_pr=create_pr,
        )


def _main(argv: list[str] | None = None) -> int:  # python -m mmsa_hf.hub verify DIR
    import argparse

    parser = argparse.ArgumentParser(prog="python -m mmsa_hf.hub")
    sub = parser.add_subparsers(dest="cmd", required=True)
    v = sub.add_parser("verify", help="verify the safetensors weights of a checkpoint dir / file / Hub repo")
    v.add_argument("path")
    v.add_argument("--revision")
    args = parser.parse_args(argv)
    directory = resolve_checkpoint_dir(args.path, args.revision) if not os.path.exists(args.path) else Path(args.path)
    files = verify_checkpoint(directory)
    for f in files:
        print(f"ok  {f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main())
