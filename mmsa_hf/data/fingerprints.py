r"""Morgan (ECFP) substructure bits as molecule-level pretraining targets (the ``fingerprint`` objective,
``docs/method.md`` §2.8; our addition).

Each molecule's folded Morgan fingerprint (RDKit ``rdFingerprintGenerator``, radius ``r``, ``num_bits`` bits;
radius 2 is ECFP4) is stored sparsely, as the sorted indices of its on bits, in a ``morgan_bits`` column
(``int32`` sequence). The collator densifies it into multi-label targets:

.. math::  y_{m,b} = \mathbb{1}\big[\,b \in \mathrm{ECFP}_r(m) \bmod \texttt{num\_bits}\,\big] \in \{0, 1\}

A SMILES RDKit cannot parse gets ``None`` (a masked row: every target NaN), never an all-zero fingerprint.

``add_fingerprints(dataset, radius, num_bits)`` is a cached ``Dataset.map``; ``fingerprint_targets(rows,
num_bits)`` builds the ``[B, num_bits]`` float tensor.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["FINGERPRINT_COLUMN", "add_fingerprints", "compute_morgan_bits", "fingerprint_targets"]

FINGERPRINT_COLUMN = "morgan_bits"


def compute_morgan_bits(smiles: Sequence[str], radius: int = 2, num_bits: int = 2048) -> list[list[int] | None]:
    """The sorted on-bit indices of each molecule's folded Morgan fingerprint; ``None`` where RDKit cannot
    parse the SMILES (or it is empty)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdFingerprintGenerator

    if radius < 0 or num_bits < 1:
        raise ValueError(f"compute_morgan_bits: radius must be >= 0 and num_bits >= 1, got {radius}, {num_bits}")
    RDLogger.DisableLog("rdApp.*")
    generator = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=num_bits)
    bits: list[list[int] | None] = []
    for text in smiles:
        mol = Chem.MolFromSmiles(text) if text else None
        bits.append(sorted(generator.GetFingerprint(mol).GetOnBits()) if mol is not None else None)
    return bits


def _fingerprint_batch(batch, smiles_column: str, radius: int, num_bits: int):
    return {FINGERPRINT_COLUMN: compute_morgan_bits(batch[smiles_column], radius, num_bits)}


def add_fingerprints(dataset, radius: int = 2, num_bits: int = 2048, smiles_column: str = "canonical_smiles",
                     num_proc: int | None = None):
    """``dataset`` plus a ``morgan_bits`` column, computed in a cached ``Dataset.map`` over ``smiles_column``
    alone and joined column-wise (a featurised dataset's large columns are not rewritten)."""
    import datasets

    from .smiles_columns import add_smiles_derived_column

    return add_smiles_derived_column(
        dataset, FINGERPRINT_COLUMN, datasets.List(datasets.Value("int32")), _fingerprint_batch,
        {"radius": radius, "num_bits": num_bits}, smiles_column=smiles_column, num_proc=num_proc, batch_size=1000,
        desc=f"Morgan bits (radius {radius}, {num_bits} bits)", caller="add_fingerprints",
    )


def fingerprint_targets(rows: Sequence[Mapping[str, Any]], num_bits: int):
    """``float32 [len(rows), num_bits]``: 1 at each row's ``morgan_bits``, 0 elsewhere, NaN for a row whose
    fingerprint is ``None`` (unparsable SMILES: a masked row)."""
    import torch

    if rows and FINGERPRINT_COLUMN not in rows[0]:
        raise KeyError(f"fingerprint targets need a {FINGERPRINT_COLUMN!r} column (add_fingerprints)")
    targets = np.zeros((len(rows), num_bits), dtype=np.float32)
    for index, row in enumerate(rows):
        bits = row[FINGERPRINT_COLUMN]
        if bits is None:
            targets[index] = math.nan
            continue
        bits = np.asarray(bits, dtype=np.int64)
        if bits.size and (bits.min() < 0 or bits.max() >= num_bits):
            raise ValueError(f"fingerprint targets: row {index} has a bit outside [0, {num_bits}); the column was "
                             "computed with another num_bits")
        targets[index, bits] = 1.0
    return torch.from_numpy(targets)
