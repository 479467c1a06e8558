"""MoleculeNet sets as Hugging Face Hub dataset repos: publish one with its split, load it back unchanged.

``publish_moleculenet("bbbp", "my-org/bbbp")`` pushes, in one commit, the split the embedded copy gives
(``load_moleculenet("bbbp")``: scaffold by default) as Parquet split files, a metadata file and a dataset card:

- ``data/train-00000-of-00001.parquet``, ``data/validation-...``, ``data/test-...``: the columns ``smiles``, the
  label columns (float, NaN = missing) and ``row_index`` (0-based data row of the source file), exactly the rows of
  each split (the layout ``datasets.load_dataset(repo_id)`` reads without any loading script);
- ``mmsa_moleculenet.json``: the task (label columns, task type, metric), the split metadata (method, fractions,
  seed, sha256 of the split, excluded rows) and the source;
- ``README.md``: the dataset card (YAML ``configs`` naming the split files, licence, source, split method).

``load_moleculenet("my-org/bbbp")`` (or :func:`load_moleculenet_from_hub`) reads the repo with
``datasets.load_dataset`` and returns the same ``DatasetDict`` as the embedded copy: the same rows, labels,
``row_index``, split, ``split_indices``, excluded rows and ``info.description`` metadata (its ``source`` is
``hub:<repo_id>[@revision]``).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Sequence

from .moleculenet import DESCRIPTION_KEY, HF_SPLIT_NAMES, MoleculeNetTask, get_task, load_moleculenet
from .splits import split_sha256

METADATA_FILE = "mmsa_moleculenet.json"
METADATA_VERSION = 1
DATA_DIR_IN_REPO = "data"


def _split_file(hf_split: str) -> str:
    return f"{DATA_DIR_IN_REPO}/{hf_split}-00000-of-00001.parquet"


def _metadata(dsd) -> dict[str, Any]:
    task = dsd.task
    return {
        "format": "mmsa_hf.moleculenet", "version": METADATA_VERSION,
        "task": {"name": task.name, "smiles_column": "smiles", "label_columns": list(task.label_columns),
                 "task_type": task.task_type, "metric": task.metric, "description": task.description,
                 "notes": task.notes, "licence_note": task.licence_note, "source_path": task.source_path},
        "split": {k: v for k, v in dsd.split_info.items() if k not in ("dataset", "smiles_column", "label_columns")},
        "split_files": {hf: _split_file(hf) for hf in HF_SPLIT_NAMES.values()},
    }


def dataset_card(metadata: dict[str, Any], repo_id: str) -> str:
    """The README.md of a published set: YAML metadata (split files, licence, tags) and a short description."""
    task, split = metadata["task"], metadata["split"]
    kind = "tabular-classification" if task["task_type"] == "classification" else "tabular-regression"
    configs = "\n".join(f"  - split: {hf}\n    path: {path}" for hf, path in metadata["split_files"].items())
    sizes = ", ".join(f"{k} {v}" for k, v in split["split_sizes"].items())
    frac = "/".join(str(f) for f in split["frac"])
    seed = f", seed {split['seed']}" if split.get("seed") is not None else ""
    return f"""---
license: other
license_name: moleculenet-mixed
pretty_name: MoleculeNet {task['name']} ({split['split']} split)
task_categories:
- {kind}
tags:
- chemistry
- molecules
- moleculenet
- smiles
- mmsa_hf
configs:
- config_name: default
  data_files:
{configs}
---

# MoleculeNet {task['name']}, {split['split']} split

{task['description']} {task['notes']}

- **Columns**: `smiles` (as in the source file), {', '.join(f'`{c}`' for c in task['label_columns'][:20])}
  {'...' if len(task['label_columns']) > 20 else ''} (float; empty = missing label), `row_index` (0-based data row of
  the source file).
- **Task**: {task['task_type']}, usual metric {task['metric']}.
- **Split**: `{split['split']}` ({frac}{seed}), computed by `mmsa_hf.data.load_moleculenet`: {sizes} molecules;
  sha256 of the split `{split['split_sha256']}`. The scaffold split is the deterministic Bemis-Murcko split of
  Hu et al. 2020. Rows RDKit rejects are in no split ({len(split['excluded_rows'])}: {split['excluded_rows']}).
- **Source**: DeepChem / MoleculeNet (Wu et al. 2018) as distributed in `chemprop/chemprop` `data/` at commit
  `3f2b7337` ({task['source_path']}), embedded in `mmsa_hf`.
- **Licence**: {task['licence_note']}. The MoleculeNet source databases keep their own terms.

```python
from mmsa_hf.data import load_moleculenet

dsd = load_moleculenet("{repo_id}")  # the same DatasetDict as load_moleculenet("{task['name']}")
```

`datasets.load_dataset("{repo_id}")` reads the same split files; `{METADATA_FILE}` holds the task and split metadata.
"""


def publish_moleculenet(
    name: str | MoleculeNetTask,
    repo_id: str,
    *,
    split: str | dict | os.PathLike = "scaffold",
    seed: int = 0,
    frac: Sequence[float] = (0.8, 0.1, 0.1),
    private: bool | None = None,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
    cache_dir: str | None = None,
):
    """Publish one MoleculeNet set (the embedded copy) with its split as a Hub dataset repo, in one commit.

    ``split`` / ``seed`` / ``frac`` are those of :func:`load_moleculenet`. The repo is created if missing; returns
    the ``CommitInfo`` of the upload.
    """
    from huggingface_hub import HfApi

    dsd = load_moleculenet(name, split=split, seed=seed, frac=frac, cache_dir=cache_dir)
    metadata = _metadata(dsd)
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mmsa_publish_") as tmp:
        folder = Path(tmp)
        (folder / DATA_DIR_IN_REPO).mkdir()
        for hf_split, path in metadata["split_files"].items():
            dsd[hf_split].to_parquet(str(folder / path))
        (folder / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
        (folder / "README.md").write_text(dataset_card(metadata, repo_id), encoding="utf-8")
        message = commit_message or f"Upload MoleculeNet {dsd.task.name} ({metadata['split']['split']} split)"
        return api.upload_folder(repo_id=repo_id, folder_path=folder, repo_type="dataset", revision=revision,
                                 commit_message=message)


def _read_metadata(repo_id: str, revision: str | None) -> dict[str, Any]:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError

    try:
        path = hf_hub_download(repo_id, METADATA_FILE, repo_type="dataset", revision=revision)
    except EntryNotFoundError:
        raise ValueError(f"{repo_id}: no {METADATA_FILE}, so not a set published by publish_moleculenet; load its "
                         f"table with load_moleculenet(<task>, data_files={repo_id!r})") from None
    metadata = json.loads(Path(path).read_text())
    if metadata.get("format") != "mmsa_hf.moleculenet":
        raise ValueError(f"{repo_id}/{METADATA_FILE}: format={metadata.get('format')!r}, not mmsa_hf.moleculenet")
    return metadata


def _task_from_metadata(meta: dict[str, Any], repo_id: str) -> MoleculeNetTask:
    task = meta["task"]
    return MoleculeNetTask(
        name=task["name"], filename=f"hub:{repo_id}", smiles_column="smiles",
        label_columns=tuple(task["label_columns"]), task_type=task["task_type"], metric=task["metric"],
        num_rows=int(meta["split"]["num_rows"]), known_invalid_rows=tuple(meta["split"]["excluded_rows"]),
        description=task.get("description", ""), notes=task.get("notes", ""),
        source_path=task.get("source_path", ""), licence_note=task.get("licence_note", ""),
    )


def _check_requested_split(repo_id: str, published: str, requested: Any) -> None:
    if requested in ("published", published):
        return
    raise ValueError(
        f"{repo_id} publishes a {published!r} split, not {requested!r}: pass split='published' (or "
        f"{published!r}), or re-split the table with load_moleculenet(<task>, split={requested!r}, data_files=...)"
    )


def load_moleculenet_from_hub(
    repo_id: str,
    split: Any = "published",
    revision: str | None = None,
    cache_dir: str | None = None,
    label_dtype: str = "float64",
):
    """Load a set published by :func:`publish_moleculenet` with its published split (see the module docstring)."""
    import datasets

    meta = _read_metadata(repo_id, revision)
    _check_requested_split(repo_id, meta["split"]["split"], split)
    task = _task_from_metadata(meta, repo_id)
    features = datasets.Features({"smiles": datasets.Value("large_string"),
                                  **{c: datasets.Value(label_dtype) for c in task.label_columns},
                                  "row_index": datasets.Value("int64")})
    loaded = datasets.load_dataset(repo_id, revision=revision, cache_dir=cache_dir)
    missing = [s for s in HF_SPLIT_NAMES.values() if s not in loaded]
    if missing:
        raise ValueError(f"{repo_id}: splits {missing} missing (found {list(loaded)})")
    source = f"hub:{repo_id}" + (f"@{revision}" if revision else "")
    indices = {key: sorted(loaded[hf]["row_index"][:]) for key, hf in HF_SPLIT_NAMES.items()}
    indices["excluded"] = sorted(int(i) for i in meta["split"]["excluded_rows"])
    if split_sha256(indices) != meta["split"]["split_sha256"]:
        raise ValueError(f"{repo_id}: the split files do not match the split recorded in {METADATA_FILE}")
    return _as_moleculenet_dict(loaded, features, task, indices, {**meta["split"], "source": source})


def _as_moleculenet_dict(loaded, features, task: MoleculeNetTask, indices: dict, split_meta: dict):
    """The ``DatasetDict`` of :func:`load_moleculenet`: columns in order, typed, metadata in ``info.description``."""
    import datasets

    meta = {"dataset": task.name, **split_meta, "smiles_column": "smiles", "label_columns": list(task.label_columns)}
    splits = {}
    for key, hf_name in HF_SPLIT_NAMES.items():
        ds = loaded[hf_name].select_columns(list(features)).cast(features)
        ds = ds.sort("row_index") if ds["row_index"][:] != indices[key] else ds
        ds.info.description = json.dumps({DESCRIPTION_KEY: {**meta, "hf_split": hf_name}})  # one split's own info
        splits[hf_name] = ds
    dsd = datasets.DatasetDict(splits)
    dsd.task, dsd.split_indices = task, indices
    dsd.excluded_rows = list(indices["excluded"])
    dsd.excluded_smiles = list(meta.get("excluded_smiles", []))
    dsd.split_info = meta
    return dsd


def is_published_moleculenet_id(name: Any) -> bool:
    """Whether ``load_moleculenet(name)`` should read a published Hub repo: ``owner/name``, not a registry name."""
    if not isinstance(name, str) or name.count("/") != 1 or name.startswith((".", "/", "~")):
        return False
    if os.path.exists(os.path.expanduser(name)):
        return False
    try:
        get_task(name)
        return False
    except ValueError:
        return all(name.split("/"))


__all__ = ["METADATA_FILE", "dataset_card", "is_published_moleculenet_id", "load_moleculenet_from_hub",
           "publish_moleculenet"]
