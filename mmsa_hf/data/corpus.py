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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

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
    if isinstance(source, str) and source.lower() == "moleculenet":
        rows = _read_moleculenet(datasets, limit, cache_dir, num_proc)
    elif datasets is not None:
        raise ValueError("datasets= only applies to source='moleculenet'")
    else:
        rows = _read_tables(source, smiles_column, limit, cache_dir, revision, num_proc)
    num_invalid, invalid = _invalid_rows(rows, on_error)
    unique, num_duplicates = _first_occurrences(rows.canonical)
    test_names = [get_task(n).name for n in (exclude_test_of or MOLECULENET_NAMES)] if exclude_test else []
    kept, excluded_per_set = _without_test_molecules(rows.canonical, unique, test_names, frac, cache_dir, num_proc)
    smiles = [rows.canonical[p] for p in kept]
    description = {
        "source": rows.source,
        "parts": rows.parts,
        "smiles_column": rows.smiles_column,
        "counts": {"rows": len(rows.canonical), "invalid": num_invalid, "duplicates_removed": num_duplicates,
                   "excluded_test_molecules": len(unique) - len(kept), "molecules": len(smiles)},
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
    logger.info("pretraining corpus %s: %s", rows.source, description["counts"])
    ds = _materialize(smiles, description, cache_dir)
    return (ds, description) if return_description else ds


@dataclass
class _CorpusRows:
    """Every input row of the corpus sources, in order: its canonical SMILES (None when RDKit rejects it) and
    where it came from; ``raw_smiles(part, row)`` gives the text as written, for messages."""

    canonical: list[str | None] = field(default_factory=list)
    origins: list[tuple[str, int]] = field(default_factory=list)
    parts: list[dict] = field(default_factory=list)
    source: str = ""
    smiles_column: str | None = None
    raw_smiles: Callable[[str, int], str] = lambda part, row: "?"

    def room(self, limit: int | None) -> int | None:
        """How many more rows ``limit`` allows (None: no limit)."""
        return None if limit is None else max(limit - len(self.canonical), 0)

    def add(self, part: str, canonical: list[str | None], **info) -> None:
        self.canonical.extend(canonical)
        self.origins.extend((part, i) for i in range(len(canonical)))
        self.parts.append({"name": part, "rows": len(canonical), **info})


def _read_moleculenet(names, limit, cache_dir, num_proc) -> _CorpusRows:
    """The embedded MoleculeNet sets (default: all 11), canonicalised once per set (cached)."""
    rows = _CorpusRows(source="moleculenet", smiles_column="smiles")
    tables = {}
    for name in [get_task(n).name for n in (names or MOLECULENET_NAMES)]:
        if rows.room(limit) == 0:
            break
        tables[name], _ = load_moleculenet_raw(name, cache_dir=cache_dir)
        canonical = _scaffold_table(tables[name], name, num_proc)["canonical_smiles"][:]
        rows.add(name, canonical[: rows.room(limit)], file=str(get_task(name).path))
    rows.raw_smiles = lambda part, row: tables[part][row]["smiles"]
    return rows


def _read_tables(source, smiles_column, limit, cache_dir, revision, num_proc) -> _CorpusRows:
    """Local CSV / Parquet files or a Hub dataset, canonicalised in a cached ``Dataset.map``."""
    paths = [os.fspath(s) for s in source] if isinstance(source, (list, tuple)) else [os.fspath(source)]
    tables = [_open_table(path, smiles_column, cache_dir, revision) for path in paths]
    rows, read = _CorpusRows(), {}
    for table, name, column in tables:
        if rows.room(limit) == 0:
            break
        if limit is not None and len(table) > rows.room(limit):
            table = table.select(range(rows.room(limit)))
        canonical = table.map(
            _canon_batch, batched=True, batch_size=1000, input_columns=[column], remove_columns=table.column_names,
            num_proc=num_proc, fn_kwargs={"cache_version": 1, "rdkit_version": rdkit_version()},
            desc=f"canonicalising {Path(name).name}",
        )["canonical_smiles"][:]
        rows.add(name, canonical, smiles_column=column)
        rows.smiles_column, read[name] = column, (table, column)
    names = [part["name"] for part in rows.parts]
    rows.source = ",".join(names) if len(names) > 1 else (names[0] if names else paths[0])
    rows.raw_smiles = lambda part, row: read[part][0][row][read[part][1]] if part in read else "?"
    return rows


def _open_table(path: str, smiles_column: str | None, cache_dir, revision):
    """``(dataset, description, smiles column)`` of one source; a clear ``ValueError`` for an unreadable or empty
    file."""
    if os.path.exists(os.path.expanduser(path)):
        _check_not_empty(os.path.expanduser(path))
    try:
        table, name = _load_table(path, None, cache_dir=cache_dir, revision=revision)
    except FileNotFoundError:
        raise
    except Exception as e:  # datasets wraps parser errors
        if "corresponds to no data" in str(e):  # header-only file: the split has no rows
            raise ValueError(f"{path}: the file has no data rows") from e
        raise ValueError(f"{path}: could not be read as a CSV / Parquet table ({type(e).__name__}: {e})") from e
    column = detect_smiles_column(table.column_names, smiles_column, source=name)
    if len(table) == 0:
        raise ValueError(f"{name}: the file has no data rows (columns found: {table.column_names})")
    return table, name, column


def _invalid_rows(rows: _CorpusRows, on_error: str) -> tuple[int, list[dict]]:
    """The number of rejected rows and the first ``_MAX_LISTED_INVALID`` of them; ``on_error="raise"`` raises a
    ``ValueError`` naming the first."""
    bad = [pos for pos, c in enumerate(rows.canonical) if c is None]
    listed = []
    for pos in bad[:_MAX_LISTED_INVALID]:
        part, row = rows.origins[pos]
        smiles = rows.raw_smiles(part, row)
        if on_error == "raise":
            raise ValueError(
                f"{part}: invalid SMILES {smiles!r} in data row {row} (0-based; {len(bad)} invalid row(s) in total). "
                "Use on_error='skip' to drop them."
            )
        listed.append({"source": part, "row": row, "smiles": smiles})
    if bad:
        logger.warning("pretraining corpus: skipped %d invalid SMILES (RDKit rejects them): %s%s", len(bad),
                       [(d["source"], d["row"]) for d in listed[:20]], " ..." if len(bad) > 20 else "")
    return len(bad), listed


def _first_occurrences(canonical: list[str | None]) -> tuple[list[int], int]:
    """Positions of the first occurrence of every valid canonical SMILES, and the number of duplicates dropped."""
    seen: set[str] = set()
    unique, duplicates = [], 0
    for pos, smiles in enumerate(canonical):
        if smiles is None:
            continue
        if smiles in seen:
            duplicates += 1
        else:
            seen.add(smiles)
            unique.append(pos)
    return unique, duplicates


def _without_test_molecules(canonical, unique, test_names, frac, cache_dir, num_proc) -> tuple[list[int], dict]:
    """``unique`` minus the molecules in the scaffold test split of any of ``test_names``, and how many of the
    excluded molecules each of those test splits holds."""
    if not test_names:
        return unique, {}
    tests = scaffold_test_smiles(test_names, frac=frac, cache_dir=cache_dir, num_proc=num_proc)
    all_test = set().union(*tests.values()) if tests else set()
    kept = [pos for pos in unique if canonical[pos] not in all_test]
    excluded = {canonical[p] for p in unique} - {canonical[p] for p in kept}
    return kept, {name: len(smiles & excluded) for name, smiles in tests.items()}


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
    ds.info.description = json.dumps({CORPUS_DESCRIPTION_KEY: description})  # the datasets metadata field
    return ds


def corpus_description(ds) -> dict | None:
    """The description dict stored by :func:`load_pretraining_corpus` (``None`` if absent)."""
    return description_entry(ds, CORPUS_DESCRIPTION_KEY)
