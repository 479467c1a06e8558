"""The 11 MoleculeNet benchmark sets shipped with the package, and ``load_moleculenet``.

The CSVs in ``mmsa_hf/data/moleculenet/`` are byte-identical to ``shared/data/moleculenet/``
(chemprop ``data/`` at commit ``3f2b7337``; see ``mmsa_hf/data/README.md`` for sources and licences).

``load_moleculenet(name)`` returns a :class:`datasets.DatasetDict` with ``train`` / ``validation`` /
``test``. Every split has the columns ``smiles`` (the SMILES as written in the file), one float
column per task (``NaN`` = missing label) and ``row_index`` (0-based data row of the source file).
Rows whose SMILES RDKit rejects are in no split; they are logged (count and row indices) and
recorded:

* ``dsd.excluded_rows`` / ``dsd.excluded_smiles`` / ``dsd.split_indices`` / ``dsd.task``
  (attributes of the returned object; lost when ``DatasetDict.map`` builds a new one), and
* durably in every split's ``info.description`` as JSON (survives ``map``, ``filter``,
  ``save_to_disk``); read it back with :func:`get_split_info`.

``save_split(dsd, path)`` writes ``{"train": [...], "valid": [...], "test": [...], "excluded": [...]}``
(the format of ``shared/data/splits/<name>_scaffold.json``); ``load_moleculenet(name, split=path)``
re-applies a saved split.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ._info import description_entry, rdkit_version
from .splits import (
    SPLIT_KEYS,
    balanced_scaffold_split_from_scaffolds,
    canonicalize_and_scaffold,
    random_split,
    scaffold_split_from_scaffolds,
    split_sha256,
)

logger = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "moleculenet"
DESCRIPTION_KEY = "mmsa_hf"
#: DatasetDict split names, in order; the split JSON uses ``valid`` for ``validation``.
HF_SPLIT_NAMES = {"train": "train", "valid": "validation", "test": "test"}
#: bump when the cached per-row computations change (part of the ``datasets`` cache key, with the
#: RDKit version, because canonical SMILES may change between RDKit releases)
CACHE_VERSION = 1




__all__ = [
    "MoleculeNetTask",
    "MOLECULENET_TASKS",
    "MOLECULENET_NAMES",
    "DATA_DIR",
    "get_task",
    "load_moleculenet",
    "load_moleculenet_raw",
    "moleculenet_scaffold_table",
    "scaffold_test_smiles",
    "get_split_info",
    "save_split",
    "load_split",
]


@dataclass(frozen=True)
class MoleculeNetTask:
    """Metadata of one MoleculeNet benchmark set."""

    name: str
    filename: str
    smiles_column: str
    label_columns: tuple[str, ...]
    task_type: str  # "classification" | "regression"
    metric: str  # "roc_auc" | "rmse"
    num_rows: int
    known_invalid_rows: tuple[int, ...] = ()
    description: str = ""
    notes: str = ""
    source_path: str = ""
    licence_note: str = "repository: MIT (chemprop); source database terms not checked"
    extra: dict = field(default_factory=dict)

    @property
    def num_tasks(self) -> int:
        return len(self.label_columns)

    @property
    def path(self) -> Path:
        """The embedded ``.csv.gz`` file."""
        return DATA_DIR / self.filename

    @property
    def is_classification(self) -> bool:
        return self.task_type == "classification"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["label_columns"] = list(self.label_columns)
        d["known_invalid_rows"] = list(self.known_invalid_rows)
        d["num_tasks"] = self.num_tasks
        return d


def _read_header(path: Path) -> list[str]:
    import csv

    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rt", newline="") as fh:
        return next(csv.reader(fh))


_SIDER = (
    "Hepatobiliary disorders", "Metabolism and nutrition disorders", "Product issues", "Eye disorders",
    "Investigations", "Musculoskeletal and connective tissue disorders", "Gastrointestinal disorders",
    "Social circumstances", "Immune system disorders", "Reproductive system and breast disorders",
    "Neoplasms benign, malignant and unspecified (incl cysts and polyps)",
    "General disorders and administration site conditions", "Endocrine disorders",
    "Surgical and medical procedures", "Vascular disorders", "Blood and lymphatic system disorders",
    "Skin and subcutaneous tissue disorders", "Congenital, familial and genetic disorders",
    "Infections and infestations", "Respiratory, thoracic and mediastinal disorders",
    "Psychiatric disorders", "Renal and urinary disorders",
    "Pregnancy, puerperium and perinatal conditions", "Ear and labyrinth disorders", "Cardiac disorders",
    "Nervous system disorders", "Injury, poisoning and procedural complications",
)  # fmt: skip
_TOX21 = (
    "NR-AR", "NR-AR-LBD", "NR-AhR", "NR-Aromatase", "NR-ER", "NR-ER-LBD", "NR-PPAR-gamma",
    "SR-ARE", "SR-ATAD5", "SR-HSE", "SR-MMP", "SR-p53",
)  # fmt: skip
_MUV = tuple(
    f"MUV-{i}" for i in (466, 548, 600, 644, 652, 689, 692, 712, 713, 733, 737, 810, 832, 846, 852, 858, 859)
)
# toxcast has 617 assay columns: read them from the embedded file's header (first line only).
_TOXCAST = tuple(_read_header(DATA_DIR / "toxcast.csv.gz")[1:]) if (DATA_DIR / "toxcast.csv.gz").exists() else ()


def _task(name, smiles_column, labels, task_type, num_rows, **kw) -> MoleculeNetTask:
    return MoleculeNetTask(
        name=name,
        filename=f"{name}.csv.gz",
        smiles_column=smiles_column,
        label_columns=tuple(labels),
        task_type=task_type,
        metric="roc_auc" if task_type == "classification" else "rmse",
        num_rows=num_rows,
        **kw,
    )


MOLECULENET_TASKS: dict[str, MoleculeNetTask] = {
    t.name: t
    for t in (
        _task("bbbp", "smiles", ("p_np",), "classification", 2039,
              description="Blood-brain barrier penetration (binary).", source_path="data/bbbp.csv"),
        _task("bace", "mol", ("Class",), "classification", 1513,
              description="BACE-1 inhibitors (binary).", source_path="data/bace.csv"),
        _task("clintox", "smiles", ("FDA_APPROVED", "CT_TOX"), "classification", 1478,
              description="FDA approval and clinical-trial toxicity (2 tasks).", source_path="data/clintox.csv"),
        _task("sider", "smiles", _SIDER, "classification", 1427,
              description="Side effects by system organ class (27 tasks).", source_path="data/sider.csv",
              licence_note="repository: MIT (chemprop); SIDER is commonly given as CC BY-NC-SA 4.0"),
        _task("tox21", "smiles", _TOX21, "classification", 7831,
              known_invalid_rows=(1322, 2290, 2297, 3558, 4565, 4649, 5538, 6723),
              description="Tox21 nuclear-receptor and stress-response assays (12 tasks, 17.1% missing).",
              notes="8 aluminium compounds are rejected by RDKit (valence error).", source_path="data/tox21.csv"),
        _task("toxcast", "smiles", _TOXCAST, "classification", 8576,
              description="ToxCast assays (617 tasks, 71.0% missing).",
              notes="8576 rows (Hu et al. 2020 report 8575).", source_path="data/toxcast.csv.gz"),
        _task("hiv", "smiles", ("HIV_active",), "classification", 41127,
              known_invalid_rows=(137, 987, 12882, 18293, 30784, 30785, 35728),
              description="HIV replication inhibition (binary).",
              notes="7 Al/B/Ge complexes are rejected by RDKit.", source_path="data/hiv.csv.gz"),
        _task("muv", "smiles", _MUV, "classification", 93087,
              description="Maximum Unbiased Validation (17 tasks, 84.2% missing).",
              notes="PRC-AUC is also common; Hu et al. report ROC-AUC.", source_path="data/muv.csv.gz"),
        _task("esol", "smiles", ("logp",), "regression", 1128,
              description="ESOL aqueous solubility, log mol/L.",
              notes="The column is named 'logp' but holds ESOL log solubility, not logP.",
              source_path="data/delaney.csv"),
        _task("freesolv", "smiles", ("freesolv",), "regression", 642,
              description="FreeSolv hydration free energy, kcal/mol.", source_path="data/freesolv.csv"),
        _task("lipophilicity", "smiles", ("lipo",), "regression", 4200,
              description="Lipophilicity, logD at pH 7.4.", source_path="data/lipo.csv",
              licence_note="repository: MIT (chemprop); ChEMBL data, commonly CC BY-SA 3.0"),
    )
}  # fmt: skip
MOLECULENET_NAMES: tuple[str, ...] = tuple(MOLECULENET_TASKS)


def get_task(name: "str | MoleculeNetTask") -> MoleculeNetTask:
    """Registry lookup (aliases allowed); a :class:`MoleculeNetTask` is returned as is, which is how
    user CSVs with their own label columns go through the same loading code (see :func:`make_task`)."""
    if isinstance(name, MoleculeNetTask):
        return name
    key = name.lower().replace("-", "").replace("_", "")
    aliases = {"lipo": "lipophilicity", "delaney": "esol", "bbbp": "bbbp"}
    key = aliases.get(key, key)
    if key not in MOLECULENET_TASKS:
        raise ValueError(f"Unknown MoleculeNet set {name!r}; choose one of {list(MOLECULENET_TASKS)}")
    return MOLECULENET_TASKS[key]


def make_task(
    path: str | os.PathLike, label_columns: Sequence[str], task_type: str, smiles_column: str = "smiles",
    name: str | None = None,
) -> MoleculeNetTask:
    """A task description for a user table (CSV/Parquet, local or Hub) with its own label columns.

    Pass it to :func:`load_moleculenet` as ``name`` together with ``data_files=path``.
    """
    if task_type not in ("classification", "regression"):
        raise ValueError(f"task_type must be 'classification' or 'regression', got {task_type!r}")
    if not label_columns:
        raise ValueError(f"{path}: give at least one label column")
    stem = Path(os.fspath(path)).name.split(".")[0]
    return MoleculeNetTask(
        name=name or stem, filename=os.fspath(path), smiles_column=smiles_column,
        label_columns=tuple(label_columns), task_type=task_type,
        metric="roc_auc" if task_type == "classification" else "rmse", num_rows=-1,
        description=f"user table {os.fspath(path)}",
    )


# ----------------------------------------------------------------------------------------- loading


def _builder_for(path: str) -> str:
    p = path.lower()
    if p.endswith(".parquet") or p.endswith(".pq"):
        return "parquet"
    if p.endswith(".json") or p.endswith(".jsonl") or p.endswith(".json.gz") or p.endswith(".jsonl.gz"):
        return "json"
    return "csv"


def _looks_like_hub_id(s: str) -> bool:
    parts = s.split("/")
    file_like = s.lower().endswith((".csv", ".gz", ".parquet", ".pq", ".json", ".jsonl", ".tsv", ".txt"))
    return len(parts) == 2 and all(parts) and not s.startswith((".", "/", "~")) and not file_like


def _resolve_local(name: str, data_files: str | os.PathLike) -> str:
    path = Path(data_files).expanduser()
    if path.is_dir():
        for cand in (f"{name}.csv.gz", f"{name}.csv", f"{name}.parquet"):
            if (path / cand).exists():
                return str(path / cand)
        raise FileNotFoundError(f"No {name}.csv.gz / {name}.csv / {name}.parquet in directory {path}")
    return str(path)


def _load_table(
    data_files: str | os.PathLike | None,
    name: str | None = None,
    cache_dir: str | None = None,
    revision: str | None = None,
    hub_data_files: Any = None,
):
    """Load one table as a ``datasets.Dataset`` (the ``train`` split of the builder).

    ``data_files`` is a local file (CSV / CSV.gz / Parquet / JSON), a directory holding
    ``<name>.csv.gz``, or a Hub dataset id (``owner/name``; optionally ``hub_data_files`` selects files
    in the repo). Returns ``(dataset, source_string)``.
    """
    import datasets

    if data_files is None:
        if name is None:
            raise ValueError("data_files=None needs a MoleculeNet name")
        path = str(get_task(name).path)
        return datasets.load_dataset("csv", data_files=path, split="train", cache_dir=cache_dir), path
    if isinstance(data_files, (list, tuple)):
        files = [str(Path(f).expanduser()) for f in data_files]
        for f in files:
            if not Path(f).exists():
                raise FileNotFoundError(f)
        return (
            datasets.load_dataset(_builder_for(files[0]), data_files=files, split="train", cache_dir=cache_dir),
            ",".join(files),
        )
    s = os.fspath(data_files)
    if os.path.exists(os.path.expanduser(s)):
        path = _resolve_local(name, s) if name is not None else str(Path(s).expanduser())
        if Path(path).is_dir():
            raise ValueError(f"{path} is a directory; pass a file")
        return datasets.load_dataset(_builder_for(path), data_files=path, split="train", cache_dir=cache_dir), path
    if _looks_like_hub_id(s):
        kwargs: dict[str, Any] = {"split": "train", "cache_dir": cache_dir}
        if revision is not None:
            kwargs["revision"] = revision
        if hub_data_files is not None:
            kwargs["data_files"] = hub_data_files
        ds = datasets.load_dataset(s, **kwargs)
        return ds, f"hub:{s}" + (f"@{revision}" if revision else "")
    raise FileNotFoundError(f"{s!r} is neither an existing local path nor a Hub dataset id (owner/name)")


def _standardize_table(table, indices, smiles_column, label_columns, label_dtype, cache_version=CACHE_VERSION):
    """Arrow batch -> ``smiles``, float labels with NaN for missing, ``row_index``."""
    import pyarrow as pa
    import pyarrow.compute as pc

    typ = pa.float32() if label_dtype == "float32" else pa.float64()
    cols = {"smiles": table.column(smiles_column).cast(pa.large_string())}
    for c in label_columns:
        cols[c] = pc.fill_null(table.column(c).cast(typ), pa.scalar(float("nan"), typ))
    cols["row_index"] = pa.array(indices, pa.int64())
    return pa.table(cols)


def _canon_scaffold_batch(smiles, cache_version=CACHE_VERSION, rdkit_version=""):
    canon, scaf = canonicalize_and_scaffold(smiles)
    return {"canonical_smiles": canon, "scaffold": scaf}


def load_moleculenet_raw(
    name: str,
    data_files=None,
    cache_dir: str | None = None,
    revision: str | None = None,
    label_dtype: str = "float64",
):
    """The whole table of one set (no split): ``smiles``, float labels (NaN = missing), ``row_index``.

    Returns ``(dataset, source)``. All loading goes through ``datasets.load_dataset`` and the
    standardisation is a cached ``Dataset.map``.
    """
    import datasets

    task = get_task(name)
    raw, source = _load_table(data_files, task.name if data_files is not None else task, cache_dir=cache_dir, revision=revision)
    cols = raw.column_names
    smiles_column = task.smiles_column if task.smiles_column in cols else ("smiles" if "smiles" in cols else None)
    if smiles_column is None:
        raise ValueError(f"{source}: no SMILES column {task.smiles_column!r} (columns found: {cols})")
    missing = [c for c in task.label_columns if c not in cols]
    if missing:
        raise ValueError(f"{source}: label columns missing for {task.name}: {missing[:10]} (columns found: {cols[:20]})")
    if label_dtype not in ("float64", "float32"):
        raise ValueError("label_dtype must be 'float64' or 'float32'")
    features = datasets.Features(
        {
            "smiles": datasets.Value("large_string"),
            **{c: datasets.Value(label_dtype) for c in task.label_columns},
            "row_index": datasets.Value("int64"),
        }
    )
    ds = raw.with_format("arrow").map(
        _standardize_table,
        batched=True,
        batch_size=10_000,
        with_indices=True,
        remove_columns=cols,
        features=features,
        fn_kwargs={"smiles_column": smiles_column, "label_columns": list(task.label_columns), "label_dtype": label_dtype,
                   "cache_version": CACHE_VERSION},
        desc=f"{task.name}: labels",
    )
    return ds.with_format(None), source


def moleculenet_scaffold_table(
    name: str, data_files=None, cache_dir: str | None = None, num_proc: int | None = None, revision=None
):
    """Cached per-row ``canonical_smiles`` and ``scaffold`` (``None`` where RDKit rejects the SMILES).

    The RDKit work runs once in a ``Dataset.map`` and is cached by ``datasets``; later calls (also
    from other processes) read the Arrow cache.
    """
    base, _ = load_moleculenet_raw(name, data_files=data_files, cache_dir=cache_dir, revision=revision)
    return _scaffold_table(base, name, num_proc)


def _scaffold_table(base, name, num_proc):
    import datasets

    return base.map(
        _canon_scaffold_batch,
        batched=True,
        batch_size=1000,
        input_columns=["smiles"],
        remove_columns=[c for c in base.column_names if c != "row_index"],
        features=datasets.Features(
            {
                "row_index": datasets.Value("int64"),
                "canonical_smiles": datasets.Value("string"),
                "scaffold": datasets.Value("string"),
            }
        ),
        num_proc=num_proc,
        fn_kwargs={"cache_version": CACHE_VERSION, "rdkit_version": rdkit_version()},
        desc=f"{name}: RDKit canonical SMILES + scaffolds",
    )


def scaffold_test_smiles(
    names: Sequence[str] | None = None,
    frac: Sequence[float] = (0.8, 0.1, 0.1),
    cache_dir: str | None = None,
    num_proc: int | None = None,
) -> dict[str, set[str]]:
    """Canonical SMILES of the scaffold **test** split of each named set (default: all 11)."""
    out = {}
    for n in names or MOLECULENET_NAMES:
        table = moleculenet_scaffold_table(n, cache_dir=cache_dir, num_proc=num_proc)
        scaf = table["scaffold"][:]
        canon = table["canonical_smiles"][:]
        split = scaffold_split_from_scaffolds(scaf, frac)
        out[get_task(n).name] = {canon[i] for i in split["test"]}
    return out


def load_split(path: str | os.PathLike) -> dict[str, list[int]]:
    """Read a split JSON (``train``/``valid``/``test``/``excluded``; ``validation`` accepted for ``valid``)."""
    with open(path) as fh:
        d = json.load(fh)
    return _normalize_split(d)


def _normalize_split(d: dict) -> dict[str, list[int]]:
    d = dict(d)
    if "valid" not in d and "validation" in d:
        d["valid"] = d.pop("validation")
    missing = [k for k in SPLIT_KEYS if k not in d]
    if missing:
        raise ValueError(f"split is missing {missing}; keys found: {list(d)}")
    return {k: sorted(int(i) for i in d.get(k, [])) for k in (*SPLIT_KEYS, "excluded")}


def _split_metadata(task, source, split_name: str, seed: int, frac, num_rows: int, indices: dict,
                    excluded_smiles: list[str]) -> dict:
    """The JSON metadata of a loaded split (stored in every split's ``info.description``)."""
    excluded = indices["excluded"]
    return {
        "dataset": task.name,
        "source": source,
        "split": split_name,
        "seed": seed if split_name in ("balanced_scaffold", "random") else None,
        "frac": list(frac),
        "num_rows": num_rows,
        "excluded_rows": excluded,
        "excluded_smiles": excluded_smiles,
        "split_sizes": {k: len(indices[k]) for k in SPLIT_KEYS},
        "split_sha256": split_sha256(indices),
        "task_type": task.task_type,
        "metric": task.metric,
        "smiles_column": "smiles",
        "label_columns": list(task.label_columns),
    }


def load_moleculenet(
    name: str,
    split: str | dict | os.PathLike = "scaffold",
    seed: int = 0,
    frac: Sequence[float] = (0.8, 0.1, 0.1),
    data_files=None,
    cache_dir: str | None = None,
    num_proc: int | None = None,
    revision: str | None = None,
    label_dtype: str = "float64",
):
    """Load one MoleculeNet set as a ``DatasetDict`` with ``train`` / ``validation`` / ``test``.

    Args:
        name: one of :data:`MOLECULENET_NAMES` (``bbbp``, ``bace``, ``clintox``, ``sider``, ``tox21``,
            ``toxcast``, ``hiv``, ``muv``, ``esol``, ``freesolv``, ``lipophilicity``).
            Or a Hub dataset repo ``owner/name`` written by :func:`mmsa_hf.data.hub_datasets.publish_moleculenet`:
            its published split is returned (``split`` must be ``"published"`` or the published method).
        split: ``"scaffold"`` (deterministic, Hu et al. 2020; reproduces
            ``shared/data/splits/<name>_scaffold.json``), ``"balanced_scaffold"`` (seeded),
            ``"random"`` (seeded), or a saved split (dict or path to a JSON written by
            :func:`save_split`).
        seed: seed of the balanced-scaffold and random splits (ignored by ``scaffold``).
        frac: train / valid / test fractions.
        data_files: ``None`` = the embedded ``.csv.gz``; a local CSV / CSV.gz / Parquet file or a
            directory holding ``<name>.csv.gz``; or a Hub dataset id ``owner/name``
            (``datasets.load_dataset(repo_id)``). All go through ``datasets.load_dataset``.
        cache_dir: ``datasets`` cache directory (default: ``HF_DATASETS_CACHE``).
        num_proc: processes for the (cached, one-off) RDKit scaffold computation.
        label_dtype: ``"float64"`` (default) or ``"float32"``; missing labels are ``NaN``.

    Returns:
        ``datasets.DatasetDict``; each split has ``smiles``, the task's label columns and
        ``row_index``. Extra attributes: ``task`` (:class:`MoleculeNetTask`), ``split_indices``
        (``{"train","valid","test","excluded"}``), ``excluded_rows``, ``excluded_smiles``; the same
        metadata (without the long index lists) is JSON in every split's ``info.description``
        (see :func:`get_split_info`).

    Cost: the first call per set canonicalises every SMILES (~0.4 ms/molecule: muv ~40 s,
    hiv ~17 s, the other sets < 3 s); later calls hit the ``datasets`` cache.
    """
    import datasets

    from .hub_datasets import is_published_moleculenet_id, load_moleculenet_from_hub

    if data_files is None and is_published_moleculenet_id(name):  # a set published by publish_moleculenet
        return load_moleculenet_from_hub(name, split=split, revision=revision, cache_dir=cache_dir,
                                         label_dtype=label_dtype)
    task = get_task(name)
    base, source = load_moleculenet_raw(
        task, data_files=data_files, cache_dir=cache_dir, revision=revision, label_dtype=label_dtype
    )
    scaffolds = _scaffold_table(base, task.name, num_proc)["scaffold"][:]
    indices, split_name = _split_indices(split, scaffolds, frac, seed, task.name)
    excluded = indices["excluded"]
    smiles_column = base["smiles"][:] if excluded else []
    excluded_smiles = [smiles_column[i] for i in excluded]
    if excluded:
        logger.warning("%s: %d row(s) whose SMILES RDKit rejects are excluded from every split (0-based rows %s)",
                       task.name, len(excluded), excluded)
    meta = _split_metadata(task, source, split_name, seed, frac, len(scaffolds), indices, excluded_smiles)
    splits = {}
    for key, hf_name in HF_SPLIT_NAMES.items():
        splits[hf_name] = base.select(indices[key])  # `select` copies the info, so each split has its own
        splits[hf_name].info.description = json.dumps({DESCRIPTION_KEY: {**meta, "hf_split": hf_name}})
    dsd = datasets.DatasetDict(splits)
    dsd.task, dsd.split_indices, dsd.split_info = task, indices, meta
    dsd.excluded_rows, dsd.excluded_smiles = list(excluded), excluded_smiles
    return dsd


def _split_indices(split, scaffolds: list[str | None], frac, seed: int, name: str) -> tuple[dict, str]:
    """``({"train", "valid", "test", "excluded"}: row lists, split name)``; RDKit-rejected rows (scaffold None)
    are always excluded."""
    rejected = [i for i, s in enumerate(scaffolds) if s is None]
    if isinstance(split, (dict, os.PathLike)) or (isinstance(split, str) and split.endswith(".json")):
        return _saved_split_indices(split, scaffolds, rejected, name), "custom"
    if split == "scaffold":
        return scaffold_split_from_scaffolds(scaffolds, frac), split
    if split == "balanced_scaffold":
        return balanced_scaffold_split_from_scaffolds(scaffolds, frac, seed), split
    if split == "random":
        return random_split(len(scaffolds), frac, seed, excluded=rejected), split
    raise ValueError(f"split must be 'scaffold', 'balanced_scaffold', 'random' or a saved split; got {split!r}")


def _saved_split_indices(split, scaffolds, rejected: list[int], name: str) -> dict:
    """A saved split (dict or JSON path), checked against the table: no overlap, in range, no rejected row."""
    indices = _normalize_split(split) if isinstance(split, dict) else load_split(split)
    n = len(scaffolds)
    all_rows = [i for k in (*SPLIT_KEYS, "excluded") for i in indices[k]]
    if len(set(all_rows)) != len(all_rows) or any(i < 0 or i >= n for i in all_rows):
        raise ValueError(f"{name}: saved split overlaps or indexes outside 0..{n - 1}")
    bad_in_split = [i for k in SPLIT_KEYS for i in indices[k] if scaffolds[i] is None]
    if bad_in_split:
        raise ValueError(f"{name}: saved split puts RDKit-rejected rows {bad_in_split} into a split")
    indices["excluded"] = sorted(set(indices["excluded"]) | set(rejected))
    return indices


def get_split_info(ds) -> dict | None:
    """The metadata ``load_moleculenet`` stored in ``info.description`` (``None`` if absent).

    Accepts a ``Dataset`` or a ``DatasetDict`` (reads its first split).
    """
    if hasattr(ds, "keys") and not hasattr(ds, "info"):
        if not len(ds):
            return None
        ds = ds[next(iter(ds.keys()))]
    return description_entry(ds, DESCRIPTION_KEY)


def save_split(dsd, path: str | os.PathLike) -> dict[str, list[int]]:
    """Write ``{"train": [...], "valid": [...], "test": [...], "excluded": [...]}`` (sorted 0-based rows
    of the source file) to ``path`` and return it.

    Uses ``dsd.split_indices`` when present (the split as drawn by :func:`load_moleculenet`);
    otherwise rebuilds it from the splits' ``row_index`` columns plus the excluded rows recorded in
    ``info.description`` (if rows were dropped later, e.g. by featurisation, they are missing here
    and a warning says so).
    """
    indices = getattr(dsd, "split_indices", None)
    if indices is None:
        info = get_split_info(dsd) or {}
        indices = {}
        for key, hf_name in HF_SPLIT_NAMES.items():
            ds = dsd[hf_name] if hf_name in dsd else dsd[key]
            if "row_index" not in ds.column_names:
                raise ValueError(f"split {hf_name!r} has no row_index column; cannot rebuild the split")
            indices[key] = ds["row_index"][:]
        indices["excluded"] = info.get("excluded_rows", [])
        indices = _normalize_split(indices)
        if info.get("split_sha256") and split_sha256(indices) != info["split_sha256"]:
            logger.warning(
                "save_split: the row_index columns no longer match the split drawn by load_moleculenet "
                "(rows dropped after loading?); writing the rows present now"
            )
    indices = _normalize_split(indices)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        json.dump(indices, fh)
    return indices
