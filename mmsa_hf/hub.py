"""Share MMSA checkpoints on the Hugging Face Hub, and load them back safely.

* :func:`push_to_hub` — one commit holding ``model.safetensors``, ``config.json`` (with ``auto_map``) and the
  modeling code, the processor config + processing code, and a generated ``README.md`` model card.
* :func:`save_for_hub` — the same folder, written locally (what :func:`push_to_hub` uploads).
* :func:`verify_checkpoint` — validates ``model.safetensors`` (header, offsets, sizes against the file length, and the
  sha256 of Hub-cache blobs) and raises :class:`CorruptCheckpointError` naming the file. transformers itself raises
  ``SafetensorError: Error while deserializing header: incomplete metadata, file not fully covered`` on a truncated
  file, without saying which file.
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

import contextlib
import copy
import hashlib
import json
import logging
import os
import re
import struct
import sys
import tempfile
from collections.abc import Iterator, Mapping
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

# bytes per element of every safetensors dtype
_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "I16": 16, "U16": 16, "F16": 16, "BF16": 16,
    "I32": 32, "U32": 32, "F32": 32, "C32": 32,  # noqa: E241
    "I64": 64, "U64": 64, "F64": 64, "C64": 64,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6,
}
_MAX_HEADER = 100 * 1024 * 1024  # safetensors' own limit
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


def _verify_safetensors_file(path: Path, check_hash: bool) -> dict[str, Any]:
    """Parse and check one .safetensors file; return its header (tensor name -> info)."""
    if not path.exists():
        raise CorruptCheckpointError(path, "the file does not exist" + (" (dangling symlink)" if path.is_symlink() else ""))
    size = path.stat().st_size
    if size < 8:
        raise CorruptCheckpointError(path, f"the file holds {size} bytes, less than the 8-byte safetensors header length")
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n == 0 or n > _MAX_HEADER:
            raise CorruptCheckpointError(path, f"invalid header length {n} (not a safetensors file?)")
        if 8 + n > size:
            raise CorruptCheckpointError(path, f"truncated: the header needs {8 + n} bytes but the file holds {size}")
        raw = f.read(n)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorruptCheckpointError(path, f"the header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise CorruptCheckpointError(path, "the header is not a JSON object")
    data_len = size - 8 - n
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            if not (isinstance(info, dict) and all(isinstance(v, str) for v in info.values())):
                raise CorruptCheckpointError(path, "__metadata__ must map strings to strings")
            continue
        try:
            dtype, shape, (begin, end) = info["dtype"], info["shape"], info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise CorruptCheckpointError(path, f"tensor {name!r} has a malformed header entry") from None
        if dtype not in _DTYPE_BITS:
            raise CorruptCheckpointError(path, f"tensor {name!r} has an unknown dtype {dtype!r}")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise CorruptCheckpointError(path, f"tensor {name!r} has an invalid shape {shape!r}")
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end):
            raise CorruptCheckpointError(path, f"tensor {name!r} has invalid data offsets {[begin, end]!r}")
        numel = 1
        for d in shape:
            numel *= d
        nbytes = (numel * _DTYPE_BITS[dtype] + 7) // 8
        if end - begin != nbytes:
            raise CorruptCheckpointError(
                path, f"tensor {name!r} ({dtype} {shape}) needs {nbytes} bytes but its offsets span {end - begin}"
            )
        spans.append((begin, end, name))
    spans.sort()
    expected = 0
    for begin, end, name in spans:
        if begin != expected:
            raise CorruptCheckpointError(path, f"tensor {name!r} starts at {begin}, expected {expected} (overlap or gap)")
        expected = end
    if expected != data_len:
        if data_len < expected:
            raise CorruptCheckpointError(
                path, f"truncated: the header declares {expected} bytes of tensor data but the file holds {data_len} "
                f"({size} bytes in all, {expected - data_len} missing)"
            )
        raise CorruptCheckpointError(
            path, f"the file holds {data_len - expected} trailing bytes after the {expected} bytes of tensor data"
        )
    if check_hash:
        _check_cache_blob_hash(path)
    return header


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

    Checks, for ``model.safetensors`` or every shard of ``model.safetensors.index.json``: the header parses, every
    tensor's byte span matches its dtype and shape, the spans tile the data section exactly, and the data section
    matches the file length (so truncation or trailing garbage is caught). For files that live in a Hugging Face
    cache (``blobs/<sha256>``) the content's sha256 is compared with the blob name (``check_hash``), which also
    catches corruption inside the tensor data. For a directory, ``check_hash`` also compares every weight file
    with the sha256 recorded in its ``checksums.json`` (:func:`verify_manifest`; a one-line notice when there is
    none).

    Returns the verified files. Raises :class:`CorruptCheckpointError` (an ``OSError``) naming the bad file, or
    ``FileNotFoundError`` if there are no safetensors weights (mentioning pickled weights if only those exist).
    """
    path = Path(path)
    if path.is_file() or (path.suffix == ".safetensors" and not path.is_dir()):
        _verify_safetensors_file(path, check_hash)
        return [path]
    files = _verify_weight_structure(path, check_hash)
    if check_hash:
        verify_manifest(path, files)
    return files


def _verify_weight_structure(path: Path, check_hash: bool) -> list[Path]:
    """The structural checks of :func:`verify_checkpoint` for a directory; returns the weight files."""
    if not path.is_dir():
        raise FileNotFoundError(f"No checkpoint directory or file at {path}")
    single, index = path / SAFETENSORS_NAME, path / SAFETENSORS_INDEX_NAME
    if single.exists() or single.is_symlink():
        _verify_safetensors_file(single, check_hash)
        return [single]
    if index.exists() or index.is_symlink():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
            assert isinstance(weight_map, dict)
        except (OSError, ValueError, KeyError, TypeError, AssertionError) as e:
            raise CorruptCheckpointError(index, f"not a valid safetensors index ({e!r})") from None
        shards = sorted(set(weight_map.values()))
        names_in_shards: set[str] = set()
        out = []
        for shard in shards:
            shard_path = path / shard
            header = _verify_safetensors_file(shard_path, check_hash)
            names_in_shards.update(k for k in header if k != "__metadata__")
            out.append(shard_path)
        missing = sorted(set(weight_map) - names_in_shards)
        if missing:
            raise CorruptCheckpointError(index, f"{len(missing)} tensors listed in the index are in no shard "
                                                f"(e.g. {missing[:3]})")
        return out
    pickled = [n for n in PICKLE_WEIGHT_NAMES if (path / n).exists()]
    if pickled:
        raise FileNotFoundError(
            f"{path} has no {SAFETENSORS_NAME}, only pickled weights ({', '.join(pickled)}); mmsa_hf never unpickles "
            "weights. Convert them to safetensors with a trusted torch.load + save_pretrained."
        )
    raise FileNotFoundError(f"No {SAFETENSORS_NAME} (or {SAFETENSORS_INDEX_NAME}) in {path}")


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
    model = model_class.from_pretrained(directory, **from_pretrained_kwargs)
    if not _is_local(repo_or_dir):  # report the repo id, not the cache path, as the model's origin
        model.config._name_or_path = str(repo_or_dir)
    return model


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

_MODALITY_AUTO_CLASS = {
    "image_processor": "AutoImageProcessor",
    "feature_extractor": "AutoFeatureExtractor",
    "video_processor": "AutoVideoProcessor",
    "tokenizer": "AutoTokenizer",
}
# Auto classes whose registry (filled by ``mmsa_hf.register_auto_classes``) we mirror into config.json's auto_map
_MODEL_AUTO_CLASSES = (
    "AutoModel",
    "AutoModelForPreTraining",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
)


def _is_library_class(cls) -> bool:
    return cls.__module__.split(".")[0] == "transformers"


@contextlib.contextmanager
def _auto_class(obj_or_cls, auto_class: str) -> Iterator[None]:
    """Temporarily set ``_auto_class`` on a class (what ``register_for_auto_class`` does, without the global side
    effect): ``save_pretrained`` then copies the class's module (and its relative imports) next to the weights and
    writes ``auto_map``."""
    cls = obj_or_cls if isinstance(obj_or_cls, type) else type(obj_or_cls)
    if _is_library_class(cls):
        yield
        return
    had = "_auto_class" in cls.__dict__
    old = cls.__dict__.get("_auto_class")
    cls._auto_class = old or auto_class
    try:
        yield
    finally:
        if had:
            cls._auto_class = old
        else:
            delattr(cls, "_auto_class")


def _model_auto_class(model) -> str:
    from .model_card import auto_class_for

    return auto_class_for(model)


def _extra_model_auto_map(model, folder: Path) -> dict[str, str]:
    """Other Auto classes registered locally for this config class whose code was copied into ``folder``.

    E.g. pushing ``MMSAForPreTraining`` also maps ``AutoModel`` to ``MMSAModel`` when both live in the copied
    modeling file, so ``AutoModel.from_pretrained(repo, trust_remote_code=True)`` gives the backbone."""
    import transformers

    config_cls = type(model.config)
    copied = {p.stem for p in folder.glob("*.py")}
    out = {}
    for auto_name in _MODEL_AUTO_CLASSES:
        auto = getattr(transformers, auto_name, None)
        mapping = getattr(auto, "_model_mapping", None)
        extra = getattr(mapping, "_extra_content", {}) if mapping is not None else {}
        target = extra.get(config_cls)
        if target is None or _is_library_class(target):
            continue
        module = target.__module__.split(".")[-1]
        if module in copied:
            out[auto_name] = f"{module}.{target.__name__}"
    return out


def _processor_attributes(processor) -> list[tuple[str, Any]]:
    get = getattr(processor, "get_attributes", None)
    names = get() if callable(get) else getattr(processor, "attributes", [])
    return [(n, getattr(processor, n)) for n in names if getattr(processor, n, None) is not None]


def _loads_attributes_via_auto(processor) -> bool:
    """Whether the processor class rebuilds its sub-processors through the Auto classes (transformers' default).

    Only then do the sub-processors need their own ``auto_map`` for remote loading; ``MMSAProcessor`` builds them
    from the nested ``processor_config.json`` itself (their code is copied as relative imports of its module)."""
    try:
        from transformers.processing_utils import ProcessorMixin
    except ImportError:  # pragma: no cover
        return False
    own = getattr(type(processor), "_get_arguments_from_pretrained", None)
    base = ProcessorMixin.__dict__.get("_get_arguments_from_pretrained")
    return getattr(own, "__func__", own) is getattr(base, "__func__", base)


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

    ``model.save_pretrained`` (safetensors + config.json) and ``processor.save_pretrained`` are run with the classes
    registered for their Auto classes, so the modeling / processing code files are copied next to them and
    ``auto_map`` is written (``trust_remote_code`` loading without ``mmsa_hf``). The README.md model card is
    generated from ``training_info`` / ``results`` unless ``model_card`` is given; ``training_info.json`` /
    ``results.json`` are written next to it when given. ``processor`` may be None. Use an empty directory: every
    file in it is listed (and uploaded by :func:`push_to_hub`).
    """
    from .model_card import generate_model_card

    folder = Path(save_directory)
    folder.mkdir(parents=True, exist_ok=True)
    card_processor = processor
    if processor is not None:
        # ProcessorMixin.save_pretrained writes `auto_map` onto the processor and its sub-processors: work on a copy
        processor = copy.deepcopy(processor)
    with contextlib.ExitStack() as stack:
        stack.enter_context(_auto_class(model, _model_auto_class(model)))
        stack.enter_context(_auto_class(model.config, "AutoConfig"))
        if processor is not None:
            stack.enter_context(_auto_class(processor, "AutoProcessor"))
            for name, attr in _processor_attributes(processor) if _loads_attributes_via_auto(processor) else []:
                modality = next((m for m in _MODALITY_AUTO_CLASS if m in name), None)
                if modality is not None:
                    stack.enter_context(_auto_class(attr, _MODALITY_AUTO_CLASS[modality]))
        model.save_pretrained(folder)
        if processor is not None:
            processor.save_pretrained(folder)
    from .modeling.checksums import MANIFEST_NAME, write_manifest

    if not (folder / MANIFEST_NAME).exists():  # a model class whose save_pretrained does not write it
        write_manifest(folder)

    if not _is_library_class(type(model)):
        config_path = folder / "config.json"
        config = json.loads(config_path.read_text())
        auto_map = dict(config.get("auto_map") or {})
        for k, v in _extra_model_auto_map(model, folder).items():
            auto_map.setdefault(k, v)
        if auto_map != config.get("auto_map"):
            config["auto_map"] = auto_map
            config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if processor is not None:  # pipeline(task, model=repo, trust_remote_code=True) without mmsa_hf
            from .pipelines import add_custom_pipelines

            add_custom_pipelines(folder)

    verify_checkpoint(folder, check_hash=False)
    card = model_card if model_card is not None else generate_model_card(
        model, card_processor, training_info=training_info, results=results, repo_id=repo_id, **card_kwargs
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
