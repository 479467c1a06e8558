r"""RDKit 2D descriptors as molecule-level pretraining targets (the ``descriptor`` objective, ``docs/method.md``).

Every function of ``rdkit.Chem.Descriptors._descList`` (about 210: MolLogP, TPSA, ring and charge counts, QED,
E-state, VSA bins, ...) is computed per molecule; a value RDKit cannot compute, or a non-finite one, is NaN (a
masked target, never a zero). Raw values span many orders of magnitude, so targets are their empirical CDF
(quantile) transform on the pretraining corpus, in ``[0, 1]`` (descriptastorus' "RDKit2DNormalized" idea; our
choice of normalisation):

.. math::  t_{m,d} = \hat F_d(x_{m,d}), \qquad \hat F_d = \text{piecewise-linear CDF through } Q_d

where :math:`Q_d` are ``num_quantiles`` quantiles of descriptor :math:`d` on a seeded sample of the corpus.
A descriptor constant on that sample carries no signal and is masked (NaN) everywhere.

``add_descriptors(dataset)`` is a cached ``Dataset.map`` that adds a ``descriptors`` column (float32, one
value per name); ``DescriptorNormalizer.fit(values)`` / ``.transform(values)`` turn it into targets; the
normaliser is plain JSON (``to_dict`` / ``from_dict``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

__all__ = [
    "DESCRIPTOR_COLUMN",
    "DescriptorNormalizer",
    "add_descriptors",
    "compute_descriptors",
    "descriptor_names",
]

DESCRIPTOR_COLUMN = "descriptors"
NORMALIZER_FILE = "descriptor_normalizer.json"


def descriptor_names() -> list[str]:
    """The RDKit descriptor names, in target order (``Descriptors._descList``, the order ``CalcMolDescriptors``
    uses; depends on the RDKit version, so it is stored with the normaliser)."""
    from rdkit.Chem import Descriptors

    return [name for name, _ in Descriptors._descList]


def _one_molecule(mol) -> list[float]:
    """RDKit's ``CalcMolDescriptors`` (a failing descriptor is ``missingVal``), with non-finite values as NaN."""
    from rdkit.Chem import Descriptors

    values = Descriptors.CalcMolDescriptors(mol, missingVal=math.nan, silent=True).values()
    return [float(v) if math.isfinite(v) else math.nan for v in values]


def compute_descriptors(smiles: Sequence[str]) -> np.ndarray:
    """``float32 [len(smiles), len(descriptor_names())]``; a SMILES RDKit cannot parse gives a row of NaN, and a
    value beyond float32's range (``Ipc`` of a large molecule) is NaN, never ``inf``."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    width = len(descriptor_names())
    rows = []
    for text in smiles:
        mol = Chem.MolFromSmiles(text) if text else None
        rows.append(_one_molecule(mol) if mol is not None else [math.nan] * width)
    values = np.asarray(rows, dtype=np.float64).reshape(len(rows), width)
    values[np.abs(values) > np.finfo(np.float32).max] = math.nan  # would overflow float32 (e.g. Ipc of a large molecule)
    return values.astype(np.float32)


def _descriptor_batch(batch, smiles_column: str):
    values = compute_descriptors(batch[smiles_column])
    return {DESCRIPTOR_COLUMN: list(values)}


def add_descriptors(dataset, smiles_column: str = "canonical_smiles", num_proc: int | None = None):
    """``dataset`` plus a ``descriptors`` column (``float32`` sequence), computed in a cached ``Dataset.map``.

    The map runs over ``smiles_column`` alone and the result is joined column-wise, so a featurised dataset's
    large columns (depictions, conformers) are not rewritten.
    """
    import datasets

    from .smiles_columns import add_smiles_derived_column

    return add_smiles_derived_column(
        dataset, DESCRIPTOR_COLUMN, datasets.Sequence(datasets.Value("float32")), _descriptor_batch, {},
        smiles_column=smiles_column, num_proc=num_proc, batch_size=256, desc="RDKit descriptors",
        caller="add_descriptors",
    )


class DescriptorNormalizer:
    """Per-descriptor empirical-CDF transform to ``[0, 1]`` (see the module docstring).

    Args:
        names: descriptor names, in column order.
        quantiles: ``[len(names), num_quantiles]`` non-decreasing quantile values; a row of NaN marks a
            descriptor that is masked (constant or never computed on the fit sample).
    """

    def __init__(self, names: Sequence[str], quantiles: np.ndarray):
        self.names = list(names)
        self.quantiles = np.asarray(quantiles, dtype=np.float64)
        if self.quantiles.ndim != 2 or self.quantiles.shape[0] != len(self.names):
            raise ValueError(
                f"DescriptorNormalizer: quantiles of shape {self.quantiles.shape} do not match {len(self.names)} names"
            )

    @classmethod
    def fit(cls, values: np.ndarray, names: Sequence[str], num_quantiles: int = 101) -> "DescriptorNormalizer":
        """Quantiles of each column of ``values`` ``[M, D]`` (NaN ignored); constant columns are masked."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(names):
            raise ValueError(f"DescriptorNormalizer.fit: values of shape {values.shape} for {len(names)} names")
        levels = np.linspace(0.0, 1.0, num_quantiles)
        quantiles = np.full((values.shape[1], num_quantiles), np.nan)
        for column in range(values.shape[1]):
            finite = values[:, column][np.isfinite(values[:, column])]
            if finite.size and finite.min() < finite.max():
                quantiles[column] = np.quantile(finite, levels)
        return cls(names, quantiles)

    @property
    def masked(self) -> list[str]:
        """Names of the descriptors that are never targets."""
        return [n for n, q in zip(self.names, self.quantiles) if not np.isfinite(q).all()]

    def transform(self, values: np.ndarray) -> np.ndarray:
        """``float32 [M, D]`` targets in ``[0, 1]``; NaN where the value is missing or the descriptor masked."""
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(self.names):
            raise ValueError(f"DescriptorNormalizer: values of shape {values.shape}, expected [M, {len(self.names)}]")
        levels = np.linspace(0.0, 1.0, self.quantiles.shape[1])
        targets = np.full(values.shape, np.nan, dtype=np.float32)
        for column, quantiles in enumerate(self.quantiles):
            if np.isfinite(quantiles).all():
                targets[:, column] = np.interp(values[:, column], quantiles, levels)
        targets[~np.isfinite(values)] = np.nan
        return targets

    def to_dict(self) -> dict[str, Any]:
        quantiles = [[None if not math.isfinite(v) else float(v) for v in row] for row in self.quantiles]
        return {"names": self.names, "quantiles": quantiles}

    @classmethod
    def from_dict(cls, payload: dict[str, Any]) -> "DescriptorNormalizer":
        rows = [[math.nan if v is None else v for v in row] for row in payload["quantiles"]]
        return cls(payload["names"], np.asarray(rows, dtype=np.float64))

    def save(self, path: str | Path) -> None:
        from ..atomic import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict()))

    @classmethod
    def load(cls, path: str | Path) -> "DescriptorNormalizer":
        return cls.from_dict(json.loads(Path(path).read_text()))
