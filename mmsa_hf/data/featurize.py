"""Featurise a SMILES dataset once, cached by ``datasets``.

``featurize_dataset(ds, processor)`` runs ``ds.map(batched=True)``; each batch calls
``processor.featurize(batch["smiles"], on_error=...)`` and stores the per-molecule records of
``docs/batch-format.md`` as columns:

=================== ============================ ===========================================
column              Arrow type                   record field
=================== ============================ ===========================================
``atom_features``   list<list<int16>[9]>         ``atom_features [n, 9]``
``bond_features``   list<list<int8>[3]>          ``bond_features [e, 3]``
``edge_index``      list<list<int32>>  (2 lists) ``edge_index [2, e]`` (local indices)
``atomic_numbers``  list<int16>                  ``atomic_numbers [n]``
``pos``             list<list<float32>[3]>       ``pos [n, 3]``
``conformer_status`` int8                        ``conformer_status``
``image_png``       binary                       ``image_png`` (PNG bytes)
``canonical_smiles`` string                      ``smiles`` (canonical; ``""`` for a placeholder)
``valid``           bool                         ``valid``
=================== ============================ ===========================================

A processor with fewer ``views`` stores fewer columns: a graph-only processor (``views=("graph",)``) writes no
``pos``, ``conformer_status`` or ``image_png`` (and computes no conformer and no depiction); its fingerprint
differs from the full processor's, so the two caches never mix.

The input columns (``smiles`` as given, labels, ...) are kept, and ``row_index`` is kept or added
(position in the input dataset). :class:`~mmsa_hf.data.MMSACollator` turns rows back into records.

Caching: the new fingerprint is a hash of the input dataset's fingerprint, the processor's
``to_dict()`` JSON, ``on_error``, the SMILES column, the record format version and the RDKit
version. A second call on the same data with an equal processor loads the Arrow cache and does
no RDKit work (``FEATURIZE_CALLS`` counts the batches the map function actually processed in this
process).

Dropped rows (``on_error="skip"``) are never silent: their count and ``row_index`` list are logged,
set as ``ds.dropped_rows`` and stored as JSON in ``ds.info.description`` (key ``mmsa_hf_featurize``);
read them with :func:`featurize_report`. They are recomputed from the input and output
``row_index`` columns, so a cache hit reports them too.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from typing import Any

from ._info import description_entry, rdkit_version

logger = logging.getLogger(__name__)

#: 2: conformer statuses 5/6 (force-field optimisation failed) split off from 0/1.
FEATURIZE_FORMAT_VERSION = 2
FEATURIZE_DESCRIPTION_KEY = "mmsa_hf_featurize"
RECORD_COLUMNS = (
    "atom_features",
    "bond_features",
    "edge_index",
    "atomic_numbers",
    "pos",
    "conformer_status",
    "image_png",
    "canonical_smiles",
    "valid",
)
#: the record columns each optional view adds (a graph-only featurisation has none of them)
VIEW_COLUMNS = {"image": ("image_png",), "geometry": ("pos", "conformer_status")}
#: number of batches the featurisation map function has processed in this process (cache hits add 0)
FEATURIZE_CALLS = 0

__all__ = [
    "featurize_dataset",
    "featurize_report",
    "record_features",
    "processor_fingerprint",
    "RECORD_COLUMNS",
    "record_columns",
    "processor_views",
]

ALL_VIEWS = ("graph", "image", "geometry")


def processor_views(processor) -> tuple[str, ...]:
    """The views ``processor`` computes (all three for a processor without a ``views`` setting)."""
    return tuple(getattr(processor, "views", None) or ALL_VIEWS)


def record_columns(views=ALL_VIEWS) -> tuple[str, ...]:
    """The record columns stored for ``views`` (``RECORD_COLUMNS`` for all views), in ``RECORD_COLUMNS`` order."""
    dropped = {c for view, cols in VIEW_COLUMNS.items() if view not in views for c in cols}
    return tuple(c for c in RECORD_COLUMNS if c not in dropped)


def record_features(views=ALL_VIEWS):
    """``datasets.Features`` of the record columns of ``views`` (default: all)."""
    from datasets import Features, List, Value

    kept = record_columns(views)
    every = (
        {
            "atom_features": List(List(Value("int16"), length=9)),
            "bond_features": List(List(Value("int8"), length=3)),
            "edge_index": List(List(Value("int32"))),
            "atomic_numbers": List(Value("int16")),
            "pos": List(List(Value("float32"), length=3)),
            "conformer_status": Value("int8"),
            "image_png": Value("binary"),
            "canonical_smiles": Value("string"),
            "valid": Value("bool"),
        }
    )
    return Features({c: every[c] for c in kept})


#: processor settings that do not change the records (left out of the cache key)
_RUNTIME_KEYS = ("on_error", "num_proc", "show_progress")


def _processor_json(processor) -> str:
    fn = getattr(processor, "to_dict", None)
    if callable(fn):
        try:
            d = fn()
            if isinstance(d, dict):
                d = {k: v for k, v in d.items() if k not in _RUNTIME_KEYS}
            return json.dumps(d, sort_keys=True, default=repr)
        except Exception:  # noqa: BLE001 - fall back to the JSON string / repr
            pass
    fn = getattr(processor, "to_json_string", None)
    if callable(fn):
        try:
            return fn()
        except Exception:  # noqa: BLE001
            pass
    return repr(processor)


def processor_fingerprint(processor) -> str:
    """sha256 of the processor's class and ``to_dict()`` JSON (what the cache key uses)."""
    cls = type(processor)
    payload = f"{cls.__module__}.{cls.__qualname__}\n{_processor_json(processor)}"
    return hashlib.sha256(payload.encode()).hexdigest()




def _to_record_columns(records, np, views=ALL_VIEWS):
    """Records -> the column lists of ``record_columns(views)``."""
    cols: dict[str, list] = {c: [] for c in record_columns(views)}
    geometry, image = "pos" in cols, "image_png" in cols
    for r in records:
        cols["atom_features"].append(np.asarray(r["atom_features"], dtype=np.int16).reshape(-1, 9))
        cols["bond_features"].append(np.asarray(r["bond_features"], dtype=np.int8).reshape(-1, 3))
        cols["edge_index"].append(np.asarray(r["edge_index"], dtype=np.int32).reshape(2, -1))
        cols["atomic_numbers"].append(np.asarray(r["atomic_numbers"], dtype=np.int16).reshape(-1))
        if geometry:
            cols["pos"].append(np.asarray(r["pos"], dtype=np.float32).reshape(-1, 3))
            cols["conformer_status"].append(int(r["conformer_status"]))
        if image:
            cols["image_png"].append(bytes(r["image_png"]))
        cols["canonical_smiles"].append(r.get("smiles") or "")
        cols["valid"].append(bool(r.get("valid", True)))
    return cols


def _featurize_kwargs(processor) -> dict:
    """``num_proc=1`` / ``show_progress=False`` when ``processor.featurize`` takes them (the map owns the
    parallelism; no nested pools, no per-batch progress bars)."""
    import inspect

    try:
        params = inspect.signature(processor.featurize).parameters
    except (TypeError, ValueError):
        return {}
    kw = {}
    if "num_proc" in params:
        kw["num_proc"] = 1
    if "show_progress" in params:
        kw["show_progress"] = False
    return kw


def _featurize_batch(batch, indices, processor, on_error, smiles_column, keep_columns, has_row_index):
    """Top-level map function (stable for pickling; the cache key is set explicitly)."""
    global FEATURIZE_CALLS
    import numpy as np

    FEATURIZE_CALLS += 1
    smiles = batch[smiles_column]
    row_index = batch["row_index"] if has_row_index else list(indices)
    kw = _featurize_kwargs(processor)
    try:
        records = processor.featurize(smiles, on_error=on_error, **kw)
    except Exception:
        if on_error != "raise":
            raise
        # locate the offending row for a precise message (failure path only)
        for k, s in enumerate(smiles):
            try:
                processor.featurize([s], on_error="raise", **kw)
            except Exception as inner:  # noqa: BLE001
                raise ValueError(
                    f"featurize_dataset: row_index {row_index[k]} (SMILES {s!r}) could not be featurised: {inner}"
                ) from inner
        raise
    kept = [int(r["input_index"]) for r in records]
    out = {c: [batch[c][k] for k in kept] for c in keep_columns}
    if not has_row_index:
        out["row_index"] = [int(row_index[k]) for k in kept]
    out.update(_to_record_columns(records, np, processor_views(processor)))
    return out


def _merge_description(ds, key: str, payload: dict) -> None:
    try:
        d = json.loads(ds.info.description or "")
        if not isinstance(d, dict):
            d = {"description": ds.info.description}
    except (ValueError, TypeError):
        d = {"description": ds.info.description} if ds.info.description else {}
    d[key] = payload
    ds.info.description = json.dumps(d)  # the datasets metadata field of this (new) dataset


def featurize_dataset(
    dataset,
    processor,
    num_proc: int | None = 1,
    batch_size: int = 64,
    accelerator: Any = None,
    on_error: str = "skip",
    smiles_column: str = "smiles",
    load_from_cache_file: bool | None = None,
    writer_batch_size: int | None = 256,
    desc: str | None = None,
):
    """Featurise ``dataset[smiles_column]`` with ``processor.featurize`` in a cached ``Dataset.map``.

    Args:
        dataset: ``datasets.Dataset`` or ``DatasetDict`` (each split is featurised).
        processor: an ``MMSAProcessor`` (anything with ``featurize(smiles, on_error=...)`` returning
            the records of ``docs/batch-format.md`` and ``to_dict()``).
        num_proc: worker processes for ``map`` (fork; the processor is pickled once per worker).
        batch_size: molecules per ``processor.featurize`` call.
        accelerator: an ``accelerate.Accelerator``; the map then runs under
            ``accelerator.main_process_first()`` so the main process builds the cache and the others
            read it.
        on_error: ``"skip"`` (drop invalid molecules; reported), ``"mask"`` (keep a placeholder row with
            ``valid=False``), ``"raise"`` (``ValueError`` naming the ``row_index`` and SMILES).
        smiles_column: the SMILES column.

    Returns:
        The featurised ``Dataset`` (or ``DatasetDict``): input columns + ``row_index`` + the record
        columns. ``.dropped_rows`` lists the ``row_index`` of rows removed under ``skip``.
    """
    if on_error not in ("skip", "mask", "raise"):
        raise ValueError(f"on_error must be 'skip', 'mask' or 'raise', got {on_error!r}")
    if _is_dataset_dict(dataset):
        return _featurize_dict(
            dataset, processor, num_proc, batch_size, accelerator, on_error, smiles_column,
            load_from_cache_file, writer_batch_size, desc,
        )  # fmt: skip

    _check_featurizable(dataset, smiles_column)
    has_row_index = "row_index" in dataset.column_names
    keep_columns = list(dataset.column_names)
    proc_fp = processor_fingerprint(processor)
    new_fingerprint = _featurized_fingerprint(dataset, proc_fp, on_error, smiles_column)
    if not dataset.cache_files:
        logger.info(
            "featurize_dataset: the dataset is in memory, so datasets cannot cache the featurisation on disk; "
            "load it with datasets.load_dataset / load_from_disk to get a cached result"
        )
    with accelerator.main_process_first() if accelerator is not None else contextlib.nullcontext():
        out = dataset.map(
            _featurize_batch,
            batched=True,
            batch_size=batch_size,
            with_indices=True,
            remove_columns=dataset.column_names,
            features=_featurized_features(dataset, processor, has_row_index),
            fn_kwargs={"processor": processor, "on_error": on_error, "smiles_column": smiles_column,
                       "keep_columns": keep_columns, "has_row_index": has_row_index},
            num_proc=None if num_proc is not None and num_proc <= 1 else num_proc,
            new_fingerprint=new_fingerprint,
            load_from_cache_file=load_from_cache_file,
            writer_batch_size=writer_batch_size,
            desc=desc or "MMSA featurisation",
        )
    report = _featurize_report(dataset, out, on_error, has_row_index)
    report.update(processor_sha256=proc_fp, fingerprint=new_fingerprint)
    _merge_description(out, FEATURIZE_DESCRIPTION_KEY, report)
    out.dropped_rows, out.featurize_report = report["dropped_row_index"], report  # documented shortcuts
    return out


def _check_featurizable(dataset, smiles_column: str) -> None:
    if smiles_column not in dataset.column_names:
        raise ValueError(f"featurize_dataset: no column {smiles_column!r} (columns: {dataset.column_names})")
    clash = [c for c in RECORD_COLUMNS if c in dataset.column_names]
    if clash:
        raise ValueError(f"featurize_dataset: the dataset already has record columns {clash} (featurised twice?)")


def _featurized_fingerprint(dataset, processor_sha256: str, on_error: str, smiles_column: str) -> str:
    """The cache key of the featurised dataset: the input's fingerprint, the processor's settings, the error
    policy, the record format and the RDKit version."""
    payload = {"dataset": dataset._fingerprint, "processor": processor_sha256, "on_error": on_error,
               "smiles_column": smiles_column, "format": FEATURIZE_FORMAT_VERSION, "rdkit": rdkit_version()}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:32]


def _featurized_features(dataset, processor, has_row_index: bool):
    """The input columns, ``row_index`` and the record columns of the processor's views."""
    import datasets

    return datasets.Features({
        **{c: dataset.features[c] for c in dataset.column_names},
        **({} if has_row_index else {"row_index": datasets.Value("int64")}),
        **record_features(processor_views(processor)),
    })


def _featurize_report(dataset, out, on_error: str, has_row_index: bool) -> dict:
    """Dropped and masked rows, recomputed from the data (so a cache hit reports them too), logged."""
    in_rows = dataset["row_index"][:] if has_row_index else range(len(dataset))
    out_rows = set(out["row_index"][:])
    dropped = [int(i) for i in in_rows if i not in out_rows]
    n_masked = 0 if on_error != "mask" else int(len(out) - sum(out["valid"][:]))
    if dropped:
        logger.warning("featurize_dataset: %d molecule(s) could not be featurised and were dropped "
                       "(on_error='skip'); row_index: %s", len(dropped), dropped)
    if n_masked:
        logger.warning("featurize_dataset: %d molecule(s) replaced by placeholders (valid=False)", n_masked)
    return {"on_error": on_error, "n_input": len(dataset), "n_output": len(out), "n_dropped": len(dropped),
            "dropped_row_index": dropped, "n_masked": n_masked}


def _is_dataset_dict(obj) -> bool:
    try:
        import datasets

        return isinstance(obj, datasets.DatasetDict)
    except Exception:  # pragma: no cover
        return False


def _featurize_dict(dsd, processor, *args):
    import datasets

    out = datasets.DatasetDict({k: featurize_dataset(v, processor, *args) for k, v in dsd.items()})
    for attr in ("task", "split_indices", "excluded_rows", "excluded_smiles", "split_info"):
        if hasattr(dsd, attr):
            setattr(out, attr, getattr(dsd, attr))
    out.dropped_rows = {k: v.dropped_rows for k, v in out.items()}
    return out


def featurize_report(ds) -> dict | None:
    """The featurisation report (``on_error``, ``n_dropped``, ``dropped_row_index``, ``n_masked`` ...): the
    dataset's ``featurize_report`` attribute, else the copy in ``info.description`` (which survives ``map``)."""
    report = getattr(ds, "featurize_report", None)
    return report if report is not None else description_entry(ds, FEATURIZE_DESCRIPTION_KEY)
