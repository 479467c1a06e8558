"""sha256 manifest of a checkpoint's weight files (``checksums.json``), written by ``save_pretrained``.

Standard library only: this module is copied to the Hub with the modeling code (remote code).

``checksums.json``::

    {"format": "mmsa-checksums", "version": 1, "algorithm": "sha256",
     "files": {"model.safetensors": {"sha256": "<64 hex digits>", "size": 1234}}}

It lists every weight file of the folder (``*.safetensors`` and ``model.safetensors.index.json``);
``mmsa_hf.hub.verify_checkpoint`` (hence ``load_model``, ``mmsa embed`` / ``predict`` and the pipelines) compares
each with its record and names the file that differs.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from pathlib import Path

MANIFEST_NAME = "checksums.json"
MANIFEST_FORMAT = "mmsa-checksums"
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json")


def sha256_file(path: str | os.PathLike) -> str:
    """The sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weight_files(directory: str | os.PathLike) -> list[Path]:
    """The weight files of a checkpoint folder, sorted by name."""
    directory = Path(directory)
    found = {path for pattern in WEIGHT_PATTERNS for path in directory.glob(pattern) if path.is_file()}
    return sorted(found, key=lambda path: path.name)


def build_manifest(directory: str | os.PathLike) -> dict:
    """The ``checksums.json`` content for the weight files now in ``directory``."""
    files = {path.name: {"sha256": sha256_file(path), "size": path.stat().st_size}
             for path in weight_files(directory)}
    return {"format": MANIFEST_FORMAT, "version": 1, "algorithm": "sha256", "files": files}


def write_manifest(directory: str | os.PathLike) -> Path:
    """Write ``checksums.json`` for the weight files of ``directory`` (atomically: temporary name, fsync,
    rename); returns its path."""
    directory = Path(directory)
    target = directory / MANIFEST_NAME
    temp = directory / f".{MANIFEST_NAME}.partial-{os.getpid()}-{secrets.token_hex(4)}"
    try:
        with open(temp, "w") as handle:
            json.dump(build_manifest(directory), handle, indent=2, sort_keys=True)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, target)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    return target


def read_manifest(directory: str | os.PathLike) -> dict | None:
    """The ``files`` records of ``directory``'s ``checksums.json`` (name -> {"sha256", "size"}), or None when
    there is no manifest. Raises ``ValueError`` naming the file when it is not a valid manifest."""
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = json.loads(path.read_text())
        files = manifest["files"]
        valid = manifest.get("algorithm") == "sha256" and isinstance(files, dict) and all(
            isinstance(rec, dict) and isinstance(rec.get("sha256"), str) for rec in files.values())
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a valid checksum manifest ({err})") from None
    if not valid:
        raise ValueError(f"{path} is not a valid checksum manifest (expected sha256 records under 'files')")
    return files


class ChecksumMismatchError(OSError):
    """A weight file differs from its ``checksums.json`` record (or is missing). ``path`` is the file."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = str(path), reason
        super().__init__(f"Corrupted or incomplete checkpoint file {self.path}: {reason}. Delete it and download / "
                         "save it again (for a Hub cache, pass force_download=True).")


_DIGESTS: dict[tuple, str] = {}  # (real path, inode, size, mtime_ns) -> sha256
_NOTICED: set[str] = set()


def sha256_cached(path: str | os.PathLike) -> str:
    """:func:`sha256_file`, remembered within the process for an unchanged file (inode, size, mtime)."""
    real = Path(path).resolve()
    stat = real.stat()
    key = (str(real), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(real)
    return _DIGESTS[key]


def check_record(path: Path, record: dict) -> None:
    """Raise :class:`ChecksumMismatchError` when ``path`` is missing or differs from its manifest ``record``."""
    if not path.exists():
        raise ChecksumMismatchError(path, f"it is listed in {MANIFEST_NAME} but does not exist")
    size = path.stat().st_size
    if record.get("size") is not None and size != record["size"]:
        raise ChecksumMismatchError(path, f"it holds {size} bytes but {MANIFEST_NAME} records {record['size']}")
    digest = sha256_cached(path)
    if digest != record["sha256"]:
        raise ChecksumMismatchError(
            path, f"its sha256 {digest} differs from {record['sha256']} recorded in {MANIFEST_NAME}: the file is "
            "damaged (or was replaced without saving the checkpoint again)")


def verify_directory(directory: str | os.PathLike, notice=None) -> bool:
    """Check every file ``checksums.json`` lists in ``directory``; True when verified. Without a manifest, return
    False after calling ``notice(message)`` once per directory (a one-line notice)."""
    directory = Path(directory)
    try:
        records = read_manifest(directory)
    except ValueError as err:
        raise ChecksumMismatchError(directory / MANIFEST_NAME, str(err)) from None
    if records is None:
        if notice is not None and str(directory.resolve()) not in _NOTICED:
            _NOTICED.add(str(directory.resolve()))
            notice(f"note: {directory} has no {MANIFEST_NAME}; its weights were checked for structure only, not "
                   "against recorded sha256 checksums")
        return False
    for name, record in sorted(records.items()):
        check_record(directory / name, record)
    return True
