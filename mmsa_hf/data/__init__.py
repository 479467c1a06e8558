"""Data layer of mmsa_hf: MoleculeNet loading and splits, pretraining corpora, cached featurisation,
and the collator that builds model batches.

Public API::

    load_moleculenet(name, split="scaffold", seed=0, frac=(0.8, 0.1, 0.1), data_files=None, cache_dir=None)
        -> datasets.DatasetDict (train / validation / test; smiles, labels (NaN = missing), row_index)
    save_split(dsd, path) / load_split(path) / get_split_info(ds)
    MOLECULENET_TASKS, MOLECULENET_NAMES, get_task(name) -> MoleculeNetTask
    scaffold_split(smiles, frac), balanced_scaffold_split(smiles, frac, seed), random_split(n, frac, seed)
    load_pretraining_corpus(source="moleculenet", smiles_column=None, exclude_test=True, datasets=None, limit=None)
    featurize_dataset(dataset, processor, num_proc=1, batch_size=64, accelerator=None, on_error="skip")
    MMSACollator(processor, label_columns=None)

Nothing here imports ``mmsa_hf.processing`` or does RDKit work at import time.
"""

from .collator import MMSACollator, row_to_record
from .corpus import corpus_description, detect_smiles_column, load_pretraining_corpus
from .featurize import RECORD_COLUMNS, featurize_dataset, featurize_report, processor_fingerprint, record_features
from .moleculenet import (
    DATA_DIR,
    MOLECULENET_NAMES,
    MOLECULENET_TASKS,
    MoleculeNetTask,
    get_split_info,
    get_task,
    load_moleculenet,
    load_moleculenet_raw,
    load_split,
    make_task,
    moleculenet_scaffold_table,
    save_split,
    scaffold_test_smiles,
)
from .splits import (
    balanced_scaffold_split,
    canonicalize_and_scaffold,
    canonicalize_smiles,
    cross_validation_split,
    random_split,
    scaffold_folds,
    scaffold_split,
    split_sha256,
)

__all__ = [
    "DATA_DIR",
    "MOLECULENET_NAMES",
    "MOLECULENET_TASKS",
    "MoleculeNetTask",
    "get_task",
    "load_moleculenet",
    "load_moleculenet_raw",
    "moleculenet_scaffold_table",
    "scaffold_test_smiles",
    "get_split_info",
    "save_split",
    "load_split",
    "make_task",
    "scaffold_split",
    "scaffold_folds",
    "cross_validation_split",
    "balanced_scaffold_split",
    "random_split",
    "split_sha256",
    "canonicalize_smiles",
    "canonicalize_and_scaffold",
    "load_pretraining_corpus",
    "corpus_description",
    "detect_smiles_column",
    "featurize_dataset",
    "featurize_report",
    "processor_fingerprint",
    "record_features",
    "RECORD_COLUMNS",
    "MMSACollator",
    "row_to_record",
]
