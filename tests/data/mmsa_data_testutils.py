"""Constants and helpers shared by the data-layer tests (a uniquely named module: tests/ has no packages)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHARED = REPO_ROOT.parent / "shared"
SHARED_SPLITS = SHARED / "data" / "splits"
REFERENCE_HASHES = Path(__file__).resolve().parent / "reference_split_hashes.json"

MOLECULENET = ("bbbp", "bace", "clintox", "sider", "tox21", "toxcast", "hiv", "muv", "esol", "freesolv", "lipophilicity")
BIG = ("hiv", "muv")

requires_shared = pytest.mark.skipif(
    not SHARED_SPLITS.is_dir(),
    reason=f"reference split files not found at {SHARED_SPLITS} (../shared next to the repo root); "
    "the comparison against tests/data/reference_split_hashes.json runs without them",
)


def shared_split_path(name: str) -> Path:
    return SHARED_SPLITS / f"{name}_scaffold.json"


def canonical_split_sha256(split: dict) -> str:
    """Independent of mmsa_hf: sha256 of the canonical JSON of the four sorted index lists."""
    payload = {k: sorted(int(i) for i in split[k]) for k in ("train", "valid", "test", "excluded")}
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def rdkit_canonical(smiles):
    """Independent canonicalisation for checks (None where RDKit rejects)."""
    from rdkit import Chem, rdBase

    out = []
    with rdBase.BlockLogs():
        for s in smiles:
            m = Chem.MolFromSmiles(s)
            out.append(Chem.MolToSmiles(m) if m is not None else None)
    return out
