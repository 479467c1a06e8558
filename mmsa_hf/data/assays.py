r"""Bioassay outcomes as molecule-level pretraining targets (the ``assay`` objective, ``docs/method.md`` §2.8; our
addition, after the graph-level supervised pretraining of Hu et al. 2020).

The tasks are the binary assays of the MoleculeNet sets **outside the fine-tuning benchmark**: ToxCast (without its
100 ``TOX21_*`` columns, which repeat the Tox21 benchmark's assays), HIV and MUV, 535 tasks in all
(:data:`ASSAY_SOURCES`). A pretraining molecule takes the labels its canonical SMILES has in those sets; every
other entry is missing:

.. math::  y_{m,t} \in \{0, 1\} \text{ where molecule } m \text{ was measured in assay } t,
           \text{ else NaN (masked)}

The pretraining corpus already excludes every molecule of every downstream scaffold **test** split, so no test
molecule's label is ever read. Where a set lists the same canonical SMILES twice, its first row's labels are kept.

Labels are stored sparsely, in an ``assay_labels`` column (``int32`` sequence of codes ``2 t + y``), by
:func:`add_assay_labels` (a cached ``Dataset.map``); :func:`assay_targets` densifies a batch into
``[B, num_tasks]`` floats with NaN where unmeasured.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["ASSAY_COLUMN", "ASSAY_SOURCES", "add_assay_labels", "assay_label_table", "assay_targets",
           "assay_task_names"]

ASSAY_COLUMN = "assay_labels"
#: set -> prefixes of the label columns left out (they duplicate an assay of the fine-tuning benchmark)
ASSAY_SOURCES: dict[str, tuple[str, ...]] = {"toxcast": ("TOX21_",), "hiv": (), "muv": ()}


def assay_task_names(sources: Mapping[str, Sequence[str]] | None = None) -> list[str]:
    """``"set/column"`` names of the assay tasks, in a fixed order (default :data:`ASSAY_SOURCES`)."""
    from .moleculenet import get_task

    names = []
    for name, excluded_prefixes in (ASSAY_SOURCES if sources is None else sources).items():
        columns = get_task(name).label_columns
        names += [f"{name}/{c}" for c in columns if not c.startswith(tuple(excluded_prefixes))]
    return names


def _split_task_names(task_names: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
    """set -> ``[(task index, column)]``; a clear error for a name that is not ``set/column``."""
    per_set: dict[str, list[tuple[int, str]]] = {}
    for index, task in enumerate(task_names):
        name, sep, column = task.partition("/")
        if not sep or not column:
            raise ValueError(f"assay task {task!r}: expected 'set/column', e.g. 'hiv/HIV_active'")
        per_set.setdefault(name, []).append((index, column))
    return per_set


def assay_label_table(task_names: Sequence[str], cache_dir: str | None = None,
                      num_proc: int | None = None) -> dict[str, list[int]]:
    """Canonical SMILES -> sorted label codes ``2 t + y`` over ``task_names`` (molecules with no label are absent).
    Labels other than 0 / 1 / NaN raise, naming the set and column."""
    from .moleculenet import _scaffold_table, load_moleculenet_raw

    table: dict[str, list[int]] = {}
    for name, tasks in _split_task_names(task_names).items():
        raw, _ = load_moleculenet_raw(name, cache_dir=cache_dir)
        canonical = _scaffold_table(raw, name, num_proc)["canonical_smiles"][:]  # the corpus's cached map
        columns = raw.select_columns([column for _, column in tasks]).with_format("numpy")[:]
        labels = np.column_stack([np.asarray(columns[column], dtype=np.float64) for _, column in tasks])
        _check_binary(labels, name, [column for _, column in tasks])
        task_index = np.array([index for index, _ in tasks])
        seen: set[str] = set()
        for smiles, row in zip(canonical, labels):
            if smiles is None or smiles in seen:
                continue
            seen.add(smiles)
            measured = ~np.isnan(row)
            if measured.any():
                codes = 2 * task_index[measured] + row[measured].astype(np.int64)
                table.setdefault(smiles, []).extend(int(c) for c in codes)
    return {smiles: sorted(codes) for smiles, codes in table.items()}


def _check_binary(labels: np.ndarray, name: str, columns: Sequence[str]) -> None:
    bad = ~np.isnan(labels) & (labels != 0) & (labels != 1)
    if bad.any():
        column = columns[int(np.argwhere(bad)[0][1])]
        raise ValueError(f"assay labels: {name}/{column} has values other than 0, 1 or missing")


def _assay_batch(batch, smiles_column: str, table: dict[str, list[int]]):
    return {ASSAY_COLUMN: [table.get(smiles, []) for smiles in batch[smiles_column]]}


def add_assay_labels(dataset, task_names: Sequence[str], smiles_column: str = "canonical_smiles",
                     num_proc: int | None = None, cache_dir: str | None = None):
    """``dataset`` plus an ``assay_labels`` column (label codes, ``[]`` for an unmeasured molecule), from a cached
    ``Dataset.map`` over ``smiles_column`` alone, joined column-wise."""
    import datasets

    from .smiles_columns import add_smiles_derived_column

    table = assay_label_table(task_names, cache_dir=cache_dir, num_proc=num_proc)
    return add_smiles_derived_column(
        dataset, ASSAY_COLUMN, datasets.List(datasets.Value("int32")), _assay_batch, {"table": table},
        smiles_column=smiles_column, num_proc=num_proc, batch_size=1000,
        desc=f"assay labels ({len(task_names)} tasks)", caller="add_assay_labels",
    )


def assay_targets(rows: Sequence[Mapping[str, Any]], num_tasks: int):
    """``float32 [len(rows), num_tasks]``: each row's measured labels, NaN where the assay did not measure it."""
    import torch

    if rows and ASSAY_COLUMN not in rows[0]:
        raise KeyError(f"assay targets need an {ASSAY_COLUMN!r} column (add_assay_labels)")
    targets = np.full((len(rows), num_tasks), math.nan, dtype=np.float32)
    for index, row in enumerate(rows):
        codes = np.asarray(row[ASSAY_COLUMN] or [], dtype=np.int64)
        if codes.size and (codes.min() < 0 or codes.max() >= 2 * num_tasks):
            raise ValueError(f"assay targets: row {index} has a task outside [0, {num_tasks}); the column was "
                             "computed with another task list")
        targets[index, codes // 2] = (codes % 2).astype(np.float32)
    return torch.from_numpy(targets)
