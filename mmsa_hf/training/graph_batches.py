"""A featurized split pre-collated once into concatenated graph tensors, batched by index slicing.

Fine-tuning reads only the 2D graph (``downstream_modalities=["graph"]``). Collating featurized rows
one Python record at a time costs more than the GIN step itself on one CPU thread, so
:class:`GraphTensorSet` concatenates a whole split once (atoms, bonds, local edge indices, per-molecule
atom/edge offsets, labels) and :meth:`GraphTensorSet.batch` builds a model batch for any list of
molecule indices with a few vectorised gathers. The batch holds the graph keys of
``docs/batch-format.md`` (``atom_features``, ``bond_features``, ``edge_index``, ``batch``, ``ptr``,
``valid_mask``) plus ``labels``; it equals what :class:`~mmsa_hf.data.MMSACollator` gives for those
keys (tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any, Iterator, Sequence

import numpy as np
import torch

__all__ = ["GraphTensorSet", "RowCollatedSet"]


def _ranges(starts: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """Concatenation of ``arange(s, s + c)`` for every (start, count) pair, without a Python loop."""
    total = int(counts.sum())
    if total == 0:
        return torch.zeros(0, dtype=torch.long)
    shift = starts - (torch.cumsum(counts, 0) - counts)
    return torch.arange(total, dtype=torch.long) + torch.repeat_interleave(shift, counts)


def _label_matrix(columns: dict[str, list], label_columns: Sequence[str]) -> np.ndarray:
    values = [[math.nan if v is None else float(v) for v in columns[c]] for c in label_columns]
    return np.asarray(values, dtype=np.float32).T.reshape(-1, len(label_columns))


@dataclass
class GraphTensorSet:
    """One split as concatenated tensors; molecule ``i`` owns atoms ``atom_ptr[i]:atom_ptr[i+1]``."""

    atom_features: torch.Tensor  # [A, 9] long
    bond_features: torch.Tensor  # [E, 3] long
    edge_index: torch.Tensor  # [2, E] long, local to each molecule
    atom_ptr: torch.Tensor  # [M + 1] long
    edge_ptr: torch.Tensor  # [M + 1] long
    labels: torch.Tensor  # [M, T] float32, NaN = missing
    row_index: torch.Tensor  # [M] long, row of the source table

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @classmethod
    def from_featurized(cls, dataset, label_columns: Sequence[str], chunk_size: int = 2048) -> "GraphTensorSet":
        """Concatenate the graph columns of a dataset written by :func:`~mmsa_hf.data.featurize_dataset`."""
        keep = ["atom_features", "bond_features", "edge_index", "row_index", *label_columns]
        parts: dict[str, list[np.ndarray]] = {k: [] for k in ("atoms", "bonds", "edges", "n_atoms", "n_edges",
                                                               "labels", "rows")}
        for start in range(0, len(dataset), chunk_size):
            columns = dataset.select_columns(keep)[start:start + chunk_size]
            atoms = [np.asarray(a, dtype=np.int64).reshape(-1, 9) for a in columns["atom_features"]]
            edges = [np.asarray(e, dtype=np.int64).reshape(2, -1) for e in columns["edge_index"]]
            parts["atoms"] += atoms
            parts["edges"] += edges
            parts["bonds"] += [np.asarray(b, dtype=np.int64).reshape(-1, 3) for b in columns["bond_features"]]
            parts["n_atoms"].append(np.asarray([len(a) for a in atoms], dtype=np.int64))
            parts["n_edges"].append(np.asarray([e.shape[1] for e in edges], dtype=np.int64))
            parts["labels"].append(_label_matrix(columns, label_columns))
            parts["rows"].append(np.asarray(columns["row_index"], dtype=np.int64))
        return cls._from_parts(parts, len(label_columns))

    @classmethod
    def _from_parts(cls, parts: dict[str, list[np.ndarray]], num_labels: int) -> "GraphTensorSet":
        def ptr(counts: list[np.ndarray]) -> torch.Tensor:
            flat = np.concatenate(counts) if counts else np.zeros(0, dtype=np.int64)
            return torch.from_numpy(np.concatenate([[0], np.cumsum(flat)]).astype(np.int64))

        def cat(arrays: list[np.ndarray], width: int, axis: int = 0) -> torch.Tensor:
            empty = np.zeros((0, width) if axis == 0 else (width, 0), dtype=np.int64)
            return torch.from_numpy(np.concatenate(arrays, axis=axis) if arrays else empty)

        return cls(
            atom_features=cat(parts["atoms"], 9),
            bond_features=cat(parts["bonds"], 3),
            edge_index=cat(parts["edges"], 2, axis=1),
            atom_ptr=ptr(parts["n_atoms"]),
            edge_ptr=ptr(parts["n_edges"]),
            labels=torch.from_numpy(np.concatenate(parts["labels"]) if parts["labels"]
                                    else np.zeros((0, num_labels), dtype=np.float32)),
            row_index=torch.from_numpy(np.concatenate(parts["rows"]) if parts["rows"] else np.zeros(0, np.int64)),
        )

    def batch(self, indices: Sequence[int] | torch.Tensor) -> dict[str, torch.Tensor]:
        """The model batch of the molecules ``indices`` (in that order)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        n_atoms = self.atom_ptr[idx + 1] - self.atom_ptr[idx]
        n_edges = self.edge_ptr[idx + 1] - self.edge_ptr[idx]
        atoms = _ranges(self.atom_ptr[idx], n_atoms)
        edges = _ranges(self.edge_ptr[idx], n_edges)
        ptr = torch.cat([n_atoms.new_zeros(1), torch.cumsum(n_atoms, 0)])
        molecules = torch.arange(len(idx), dtype=torch.long)
        return {
            "atom_features": self.atom_features[atoms],
            "bond_features": self.bond_features[edges],
            "edge_index": self.edge_index[:, edges] + torch.repeat_interleave(ptr[:-1], n_edges),
            "batch": torch.repeat_interleave(molecules, n_atoms),
            "ptr": ptr,
            "valid_mask": torch.ones(len(idx), dtype=torch.bool),
            "labels": self.labels[idx],
        }

    def batches(self, batch_size: int, generator: torch.Generator | None = None) -> Iterator[dict[str, torch.Tensor]]:
        """Batches over the whole set: shuffled by ``generator`` (one permutation per call) or in order."""
        order = torch.randperm(len(self), generator=generator) if generator is not None else torch.arange(len(self))
        for start in range(0, len(self), batch_size):
            yield self.batch(order[start:start + batch_size])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> "GraphTensorSet":
        return cls(**{f.name: state[f.name] for f in fields(cls)})


class RowCollatedSet:
    """The general path for views other than the graph: featurized rows collated per batch by
    :class:`~mmsa_hf.data.MMSACollator` (images and conformers included). Same interface as
    :class:`GraphTensorSet`."""

    def __init__(self, dataset, collator, label_columns: Sequence[str]):
        self.dataset = dataset
        self.collator = collator
        columns = dataset.select_columns(list(label_columns))[:]
        self.labels = torch.from_numpy(_label_matrix(columns, label_columns))
        self.row_index = torch.as_tensor(dataset["row_index"], dtype=torch.long)

    def __len__(self) -> int:
        return len(self.dataset)

    def batch(self, indices: Sequence[int] | torch.Tensor) -> dict[str, Any]:
        batch = dict(self.collator(self.dataset[[int(i) for i in indices]]))
        batch.pop("row_index", None)
        return batch

    batches = GraphTensorSet.batches
