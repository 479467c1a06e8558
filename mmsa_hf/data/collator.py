"""Collate featurised dataset rows into the model's batch (``docs/batch-format.md``).

``MMSACollator(processor, label_columns)`` is a ``DataLoader`` ``collate_fn``: rows written by
:func:`~mmsa_hf.data.featurize_dataset` -> per-molecule records -> ``processor.collate(records)``
(the same code ``processor(smiles)`` runs, so both paths give identical tensors), plus

* ``labels``: float32 ``[B, T]`` from ``label_columns`` (``NaN`` kept for missing labels), and
* ``row_index``: long ``[B]`` (0-based data row of the source file), and
* ``descriptor_targets``: float32 ``[B, D]``, with a ``descriptor_normalizer`` (rows carrying the
  ``descriptors`` column of :func:`~mmsa_hf.data.descriptors.add_descriptors`).

Only the processor's ``views`` are read back: a graph-only processor collates graph tensors only (no PNG
decoding, no ``pos``), from a graph-only cache or from a full one.

Importing this module does no RDKit work; collating decodes PNGs only (and only for the image view).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

__all__ = ["MMSACollator", "row_to_record"]


ALL_VIEWS = ("graph", "image", "geometry")


def row_to_record(row: Mapping[str, Any], input_index: int = 0, views: Sequence[str] = ALL_VIEWS) -> dict[str, Any]:
    """One featurised dataset row -> the per-molecule record ``processor.collate`` expects, with the record keys
    of ``views`` only (a graph-only record has no ``pos`` / ``conformer_status`` / ``image_png``). A row lacking
    a requested view raises a ``KeyError`` naming the view."""
    import numpy as np

    record = {
        "atom_features": np.asarray(row["atom_features"], dtype=np.int64).reshape(-1, 9),
        "bond_features": np.asarray(row["bond_features"], dtype=np.int64).reshape(-1, 3),
        "edge_index": np.asarray(row["edge_index"], dtype=np.int64).reshape(2, -1),
        "atomic_numbers": np.asarray(row["atomic_numbers"], dtype=np.int64).reshape(-1),
    }
    try:
        if "geometry" in views:
            record["pos"] = np.asarray(row["pos"], dtype=np.float32).reshape(-1, 3)
            record["conformer_status"] = int(row["conformer_status"])
        if "image" in views:
            record["image_png"] = bytes(row["image_png"])
    except KeyError as missing:
        view = "geometry" if missing.args[0] in ("pos", "conformer_status") else "image"
        raise KeyError(
            f"row has no {missing.args[0]!r} column, needed for the {view!r} view: the dataset was featurised "
            f"without it (use a processor whose views match the featurisation)"
        ) from None
    record.update(smiles=row.get("canonical_smiles", "") or "", valid=bool(row.get("valid", True)),
                  input_index=int(input_index))
    return record


def _label(value) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


class MMSACollator:
    """Batch featurised rows for ``MMSAModel`` / ``MMSAFor...`` models.

    Args:
        processor: the ``MMSAProcessor`` used for featurisation (its ``collate`` builds the batch).
        label_columns: columns stacked into ``labels`` ``[B, T]`` (float32, ``NaN`` = missing);
            ``None`` = no labels (pretraining).
        label_dtype: torch dtype name of ``labels`` (default ``"float32"``).
        descriptor_normalizer: a :class:`~mmsa_hf.data.descriptors.DescriptorNormalizer`; the batch then has
            ``descriptor_targets`` (the pretraining ``descriptor`` term).
        fingerprint_bits: width of the folded Morgan fingerprint; the batch then has ``fingerprint_targets``
            ``[B, fingerprint_bits]`` (the pretraining ``fingerprint`` term; rows carry the ``morgan_bits`` column of
            :func:`~mmsa_hf.data.fingerprints.add_fingerprints`).
        assay_tasks: number of pretraining assays; the batch then has ``assay_targets`` ``[B, assay_tasks]`` (NaN
            where not measured; rows carry the ``assay_labels`` column of :func:`~mmsa_hf.data.assays.add_assay_labels`).
    """

    def __init__(self, processor, label_columns: Sequence[str] | str | None = None, label_dtype: str = "float32",
                 descriptor_normalizer=None, fingerprint_bits: int | None = None,
                 assay_tasks: int | None = None):
        self.processor = processor
        self.descriptor_normalizer = descriptor_normalizer
        self.fingerprint_bits = fingerprint_bits
        self.assay_tasks = assay_tasks
        if isinstance(label_columns, str):
            label_columns = [label_columns]
        self.label_columns = list(label_columns) if label_columns is not None else None
        self.label_dtype = label_dtype

    def __repr__(self) -> str:
        return f"MMSACollator(processor={type(self.processor).__name__}, label_columns={self.label_columns})"

    @staticmethod
    def _rows(batch) -> list[Mapping[str, Any]]:
        if isinstance(batch, Mapping):  # a dataset slice: dict of lists
            keys = list(batch)
            n = len(batch[keys[0]]) if keys else 0
            return [{k: batch[k][i] for k in keys} for i in range(n)]
        return list(batch)

    def __call__(self, batch):
        import torch

        rows = self._rows(batch)
        if not rows:
            raise ValueError("MMSACollator: empty batch")
        views = tuple(getattr(self.processor, "views", None) or ALL_VIEWS)
        records = [row_to_record(r, i, views) for i, r in enumerate(rows)]
        out = self.processor.collate(records)
        if self.label_columns:
            missing = [c for c in self.label_columns if c not in rows[0]]
            if missing:
                raise KeyError(f"MMSACollator: label columns {missing} not in the rows (keys: {list(rows[0])})")
            labels = [[_label(r[c]) for c in self.label_columns] for r in rows]
            out["labels"] = torch.tensor(labels, dtype=getattr(torch, self.label_dtype))
        if "row_index" in rows[0]:
            out["row_index"] = torch.tensor([int(r["row_index"]) for r in rows], dtype=torch.long)
        if self.descriptor_normalizer is not None:
            out["descriptor_targets"] = self._descriptor_targets(rows)
        if self.fingerprint_bits:
            from .fingerprints import fingerprint_targets

            out["fingerprint_targets"] = fingerprint_targets(rows, self.fingerprint_bits)
        if self.assay_tasks:
            from .assays import assay_targets

            out["assay_targets"] = assay_targets(rows, self.assay_tasks)
        return out

    def _descriptor_targets(self, rows):
        import numpy as np
        import torch

        if "descriptors" not in rows[0]:
            raise KeyError("MMSACollator: a descriptor_normalizer needs a 'descriptors' column (add_descriptors)")
        values = np.stack([np.asarray(r["descriptors"], dtype=np.float64) for r in rows])
        return torch.from_numpy(self.descriptor_normalizer.transform(values))
