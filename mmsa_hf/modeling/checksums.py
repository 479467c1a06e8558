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
