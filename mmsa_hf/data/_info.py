"""Small helpers shared by the data modules: the RDKit version (part of every cache key) and the
JSON entries stored in a dataset's ``info.description``."""

from __future__ import annotations

import json
from typing import Any


def rdkit_version() -> str:
    """RDKit's version; part of the ``fn_kwargs`` of every cached map, so a new RDKit recomputes."""
    import rdkit

    return rdkit.__version__


def description_entry(ds: Any, key: str) -> dict | None:
    """The dict stored under ``key`` in ``ds.info.description`` (JSON), or ``None`` if absent."""
    try:
        entry = json.loads(ds.info.description or "")
    except (ValueError, TypeError, AttributeError):
        return None
    return entry.get(key) if isinstance(entry, dict) else None
