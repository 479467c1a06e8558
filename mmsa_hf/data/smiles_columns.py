"""Per-molecule columns computed from SMILES in a cached ``Dataset.map`` and joined column-wise (the descriptor and
Morgan-bit pretraining targets). The map reads ``smiles_column`` alone, so a featurised dataset's large columns
(depictions, conformers) are never rewritten; ``datasets`` caches the result by the function and its arguments."""

from __future__ import annotations

from typing import Any, Callable


def add_smiles_derived_column(dataset, column: str, feature, batch_function: Callable, fn_kwargs: dict[str, Any], *,
                              smiles_column: str, num_proc: int | None, batch_size: int, desc: str, caller: str):
    """``dataset`` plus ``column`` (``datasets`` feature ``feature``), from
    ``batch_function(batch, smiles_column=..., **fn_kwargs) -> {column: values}``.

    Raises ``ValueError`` (naming ``caller``) when ``smiles_column`` is missing or ``column`` already exists."""
    import datasets

    if smiles_column not in dataset.column_names:
        raise ValueError(f"{caller}: no column {smiles_column!r} (columns: {dataset.column_names})")
    if column in dataset.column_names:
        raise ValueError(f"{caller}: the dataset already has a {column!r} column")
    values = dataset.select_columns([smiles_column]).map(
        batch_function,
        batched=True,
        batch_size=batch_size,
        fn_kwargs={"smiles_column": smiles_column, **fn_kwargs},
        remove_columns=[smiles_column],
        features=datasets.Features({column: feature}),
        num_proc=num_proc if num_proc and num_proc > 1 else None,
        desc=desc,
    )
    return datasets.concatenate_datasets([dataset, values], axis=1)
