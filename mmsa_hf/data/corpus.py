"""Unlabelled SMILES corpora for self-supervised pretraining.

``load_pretraining_corpus()`` (default) is the union of the 11 MoleculeNet sets' SMILES, deduplicated by
RDKit canonical SMILES, **minus every molecule (by canonical SMILES) in the scaffold test split of
any of the 11 downstream sets** (``exclude_test=False`` keeps them). Any CSV / CSV.gz / Parquet file
(local or on the Hub) with a SMILES column can be used instead (``source=path`` or ``source="owner/name"``);
test molecules of the downstream sets are excluded from it as well.

The returned :class:`datasets.Dataset` has one column, ``smiles`` (RDKit canonical SMILES, first
occurrence order). A description dict (source, counts of input rows, invalid rows, duplicates
removed, excluded test molecules, final molecules) is JSON in ``ds.info.description``; read it
with :func:`corpus_description`, or pass ``return_description=True``.

Cost: canonicalisation runs in a cached ``Dataset.map`` (~0.4 ms/molecule for MoleculeNet, where it
also yields the scaffolds the test exclusion needs, ~0.16 ms/molecule for other files). The
default corpus touches ~160k MoleculeNet rows (muv alone 93k): about 70 s on one core the first
time, a few seconds once cached. ``num_proc`` parallelises the first run.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from pathlib import Path
from typing import Sequence

from .moleculenet import (
    MOLECULENET_NAMES,
    _load_table,
    _scaffold_table,
    get_task,
    load_moleculenet_raw,
    scaffold_test_smiles,
)
from ._info import description_entry, rdkit_version
from .splits import canonicalize_smiles

logger = logging.getLogger(__name__)

CORPUS_DESCRIPTION_KEY = "mmsa_hf_corpus"
SMILES_COLUMN_CANDIDATES = ("smiles", "SMILES", "Smiles", "canonical_smiles", "mol")
_MAX_LISTED_INVALID = 1000

__all__ = ["load_pretraining_corpus", "corpus_description", "detect_smiles_column", "SMILES_COLUMN_CANDIDATES"]


def detect_smiles_column(columns: Sequence[str], smiles_column: str | None = None, source: str = "") -> str:
    """The SMILES column: ``smiles_column`` if given, else the first of :data:`SMILES_COLUMN_CANDIDATES`
    (then any column named ``smiles`` case-insensitively). Raises ``ValueError`` naming the file and
    the columns found."""
    columns = list(columns)
    if smiles_column is not None:
        if smiles_column not in columns:
            raise ValueError(f"{source}: SMILES column {smiles_column!r} not found (columns found: {columns})")
        return smiles_column
    for c in SMILES_COLUMN_CANDIDATES:
        if c in columns:
            return c
    for c in columns:
        if c.lower() == "smiles":
            return c
    raise ValueError(
        f"{source}: no SMILES column (looked for {list(SMILES_COLUMN_CANDIDATES)}; columns found: {columns}); "
        "pass smiles_column="
    )


def _check_not_empty(path: str) -> None:
    p = Path(path)
    if p.is_file():
        if p.stat().st_size == 0:
            raise ValueError(f"{path}: the file is empty")
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                if not fh.read(1):
                    raise ValueError(f"{path}: the file is empty (after gzip decompression)")


def _canon_batch(smiles, cache_version=1, rdkit_version=""):
    return {"canonical_smiles": canonicalize_smiles(smiles)}




def load_pretraining_corpus(
    source: str | os.PathLike | Sequence[str] = "moleculenet",
    smiles_column: str | None = None,
    exclude_test: bool = True,
    datasets: Sequence[str] | None = None,
    limit: int | None = None,
    on_error: str = "skip",
    exclude_test_of: Sequence[str] | None = None,
    frac: Sequence[float] = (0.8, 0.1, 0.1),
    num_proc: int | None = None,
    cache_dir: str | None = None,
    revision: str | None = None,
    return_description: bool = False,
):
    """Build a deduplicated, leakage-free SMILES corpus.

    Args:
        source: ``"moleculenet"`` (union of the embedded MoleculeNet sets), a local CSV / CSV.gz /
            Parquet file (or a list of them), or a Hub dataset id ``owner/name``.
        smiles_column: column holding SMILES; default: auto-detect ``smiles`` / ``SMILES`` / ``mol`` ...
        exclude_test: drop every molecule whose canonical SMILES is in the scaffold test split of a
            downstream set (``exclude_test_of``).
        datasets: for ``source="moleculenet"``, which sets to take SMILES from (default: all 11).
        limit: read at most this many input rows (file order; for the MoleculeNet union in the order
            of ``datasets``), before validation, deduplication and exclusion. For smoke runs.
        on_error: invalid SMILES (RDKit rejects, or empty cell): ``"skip"`` (counted, logged, listed in
            the description) or ``"raise"`` (``ValueError`` naming the row and the SMILES).
        exclude_test_of: downstream sets whose scaffold test molecules are excluded (default: all 11,
            whatever ``datasets`` is).
        frac: split fractions used to draw those scaffold test splits.
        num_proc: processes for the (cached, one-off) RDKit canonicalisation.
        cache_dir: ``datasets`` cache directory.
        return_description: return ``(dataset, description)`` instead of the dataset.

    Returns:
        ``datasets.Dataset`` with a ``smiles`` column of canonical SMILES (and the description
        dict when ``return_description``). The description is also JSON in ``info.description``.
    """
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")
    if limit is not None and limit < 0:
        raise ValueError("limit must be >= 0")

    invalid: list[dict] = []
    n_invalid = 0
    canon_all: list[str | None] = []
    origins: list[tuple[str, int]] = []  # (part, row) per input row, for messages
    raw_smiles_getters = []
    is_moleculenet = isinstance(source, str) and source.lower() == "moleculenet"

    if is_moleculenet:
        names = [get_task(n).name for n in (datasets or MOLECULENET_NAMES)]
        parts = []
        bases = {}
        for name in names:
            if limit is not None and len(canon_all) >= limit:
                break
            base, _ = load_moleculenet_raw(name, cache_dir=cache_dir)
            bases[name] = base
            table = _scaffold_table(base, name, num_proc)
            canon = table["canonical_smiles"][:]
            if limit is not None:
                canon = canon[: limit - len(canon_all)]
            canon_all.extend(canon)
            origins.extend((name, i) for i in range(len(canon)))
            parts.append({"name": name, "rows": len(canon), "file": str(get_task(name).path)})
        files = [p["file"] for p in parts]
        desc_source = "moleculenet"
        used_column = "smiles"

        def raw_smiles(part: str, row: int) -> str:
            return bases[part][row]["smiles"]

    else:
        if datasets is not None:
            raise ValueError("datasets= only applies to source='moleculenet'")
        srcs = [os.fspath(s) for s in source] if isinstance(source, (list, tuple)) else [os.fspath(source)]
        files = []
        used_column = None
        parts = []
        loaded = []
        for s in srcs:
            if os.path.exists(os.path.expanduser(s)):
                _check_not_empty(os.path.expanduser(s))
            try:
                ds, desc = _load_table(s, None, cache_dir=cache_dir, revision=revision)
            except FileNotFoundError:
                raise
            except Exception as e:  # datasets wraps parser errors
                if "corresponds to no data" in str(e):  # header-only file: the split has no rows
                    raise ValueError(f"{s}: the file has no data rows") from e
                raise ValueError(f"{s}: could not be read as a CSV / Parquet table ({type(e).__name__}: {e})") from e
            col = detect_smiles_column(ds.column_names, smiles_column, source=desc)
            if len(ds) == 0:
                raise ValueError(f"{desc}: the file has no data rows (columns found: {ds.column_names})")
            loaded.append((ds, desc, col))
        for ds, desc, col in loaded:
            if limit is not None and len(canon_all) >= limit:
                break
            if limit is not None and len(ds) > limit - len(canon_all):
                ds = ds.select(range(limit - len(canon_all)))
            table = ds.map(
                _canon_batch,
                batched=True,
                batch_size=1000,
                input_columns=[col],
                remove_columns=ds.column_names,
                num_proc=num_proc,
                fn_kwargs={"cache_version": 1, "rdkit_version": rdkit_version()},
                desc=f"canonicalising {Path(desc).name}",
            )
            canon = table["canonical_smiles"][:]
            canon_all.extend(canon)
            origins.extend((desc, i) for i in range(len(canon)))
            parts.append({"name": desc, "rows": len(canon), "smiles_column": col})
            files.append(desc)
            used_column = col
            raw_smiles_getters.append((desc, ds, col))
        desc_source = ",".join(files) if len(files) > 1 else (files[0] if files else os.fspath(srcs[0]))

        def raw_smiles(part: str, row: int) -> str:
            for d, ds, col in raw_smiles_getters:
                if d == part:
                    return ds[row][col]
            return "?"

    # invalid rows
    for pos, c in enumerate(canon_all):
        if c is None:
            n_invalid += 1
            if on_error == "raise" or len(invalid) < _MAX_LISTED_INVALID:
                part, row = origins[pos]
                smi = raw_smiles(part, row)
                if on_error == "raise":
                    total = sum(x is None for x in canon_all)
                    raise ValueError(
                        f"{part}: invalid SMILES {smi!r} in data row {row} (0-based; {total} invalid row(s) in total). "
                        "Use on_error='skip' to drop them."
                    )
                invalid.append({"source": part, "row": row, "smiles": smi})
    if n_invalid:
        logger.warning(
            "pretraining corpus: skipped %d invalid SMILES (RDKit rejects them): %s%s",
            n_invalid,
            [(d["source"], d["row"]) for d in invalid[:20]],
            " ..." if n_invalid > 20 else "",
        )

    # dedupe
    seen: set[str] = set()
    unique_pos: list[int] = []
    n_dup = 0
    for pos, c in enumerate(canon_all):
        if c is None:
            continue
        if c in seen:
            n_dup += 1
            continue
        seen.add(c)
        unique_pos.append(pos)

    # test exclusion
    n_excluded = 0
    excluded_per_set: dict[str, int] = {}
    test_names: list[str] = []
    if exclude_test:
        test_names = [get_task(n).name for n in (exclude_test_of or MOLECULENET_NAMES)]
        tests = scaffold_test_smiles(test_names, frac=frac, cache_dir=cache_dir, num_proc=num_proc)
        all_test = set().union(*tests.values()) if tests else set()
        kept = []
        for pos in unique_pos:
            if canon_all[pos] in all_test:
                n_excluded += 1
            else:
                kept.append(pos)
        kept_set = {canon_all[p] for p in unique_pos} - {canon_all[p] for p in kept}
        excluded_per_set = {n: len(s & kept_set) for n, s in tests.items()}
        unique_pos = kept

    import datasets as hf_datasets

    smiles = [canon_all[p] for p in unique_pos]
    description = {
        "source": desc_source,
        "parts": parts,
        "smiles_column": used_column,
        "counts": {
            "rows": len(canon_all),
            "invalid": n_invalid,
            "duplicates_removed": n_dup,
            "excluded_test_molecules": n_excluded,
            "molecules": len(smiles),
        },
        "invalid_rows": invalid,
        "exclude_test": bool(exclude_test),
        "exclude_test_of": test_names,
        "excluded_test_molecules_per_set": excluded_per_set,
        "split_frac": list(frac),
        "dedupe": "RDKit canonical SMILES (Chem.MolToSmiles), first occurrence kept",
        "limit": limit,
        "on_error": on_error,
        "rdkit_version": rdkit_version(),
    }
    logger.info("pretraining corpus %s: %s", desc_source, description["counts"])
    ds = _materialize(smiles, description, cache_dir)
    ds.corpus_description = description
    return (ds, description) if return_description else ds


def _materialize(smiles: list[str], description: dict, cache_dir: str | None):
    """Write the corpus once to a Parquet file in the datasets cache (keyed by its content) and load it
    with ``load_dataset("parquet")``: the result is disk-backed with a stable fingerprint, so later
    ``Dataset.map`` calls (featurisation) are cached by ``datasets``."""
    import hashlib

    import datasets as hf_datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    h = hashlib.sha256()
    h.update(json.dumps({k: v for k, v in description.items() if k != "invalid_rows"}, sort_keys=True).encode())
    for s in smiles:
        h.update(s.encode())
        h.update(b"\n")
    root = Path(cache_dir or hf_datasets.config.HF_DATASETS_CACHE) / "mmsa_hf_corpus"
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"corpus-{h.hexdigest()[:24]}.parquet"
    if not path.exists():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        pq.write_table(pa.table({"smiles": pa.array(smiles, pa.string())}), tmp)
        os.replace(tmp, path)
    ds = hf_datasets.load_dataset("parquet", data_files=str(path), split="train", cache_dir=cache_dir)
    info = ds.info.copy()
    info.description = json.dumps({CORPUS_DESCRIPTION_KEY: description})
    ds._info = info
    return ds


def corpus_description(ds) -> dict | None:
    """The description dict stored by :func:`load_pretraining_corpus` (``None`` if absent)."""
    d = getattr(ds, "corpus_description", None)
    if d is not None:
        return d
    return description_entry(ds, CORPUS_DESCRIPTION_KEY)
