"""transformers ``pipeline()`` support: the MMSA pipelines registered with ``PIPELINE_REGISTRY``.

Importing ``mmsa_hf`` registers two tasks:

- ``"molecular-feature-extraction"`` (:class:`MMSAFeatureExtractionPipeline`, ``AutoModel``): SMILES -> unified
  (or per-view) embeddings;
- ``"molecular-property-prediction"`` (:class:`MMSAPropertyPredictionPipeline`,
  ``AutoModelForSequenceClassification``): SMILES -> per-task probabilities / values named by ``config.id2label``.

``pipeline("molecular-feature-extraction", model="checkpoints/mmsa-small")`` then works on any local MMSA checkpoint
saved with its processor. The implementation lives in the self-contained ``mmsa_hf/pipeline_mmsa.py``, which
:func:`add_custom_pipelines` copies next to a checkpoint (``mmsa_hf.hub.save_for_hub`` / ``mmsa push`` do it) and
declares in its ``config.json`` (``custom_pipelines``), the way transformers documents custom pipelines: such a
checkpoint loads with ``pipeline(task, model=repo, trust_remote_code=True)`` where ``mmsa_hf`` is not installed.
transformers requires ``trust_remote_code=True`` for every checkpoint whose config declares custom pipelines, with
or without ``mmsa_hf``.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .pipeline_mmsa import (
    CUSTOM_PIPELINES,
    FEATURE_EXTRACTION_TASK,
    PROPERTY_PREDICTION_TASK,
    MMSAFeatureExtractionPipeline,
    MMSAPropertyPredictionPipeline,
    model_views,
)

PIPELINE_FILE = Path(__file__).resolve().parent / "pipeline_mmsa.py"


def register_pipelines() -> None:
    """Register both tasks with ``transformers.pipelines.PIPELINE_REGISTRY`` (idempotent, no warning)."""
    from transformers import AutoModel, AutoModelForSequenceClassification
    from transformers.pipelines import PIPELINE_REGISTRY

    tasks = {
        FEATURE_EXTRACTION_TASK: (MMSAFeatureExtractionPipeline, AutoModel),
        PROPERTY_PREDICTION_TASK: (MMSAPropertyPredictionPipeline, AutoModelForSequenceClassification),
    }
    for task, (pipeline_class, model_class) in tasks.items():
        current = PIPELINE_REGISTRY.supported_tasks.get(task)
        if current is not None and current.get("impl") is pipeline_class:
            continue
        PIPELINE_REGISTRY.register_pipeline(task, pipeline_class=pipeline_class, pt_model=model_class,
                                            type="multimodal")


def add_custom_pipelines(checkpoint_dir: str | os.PathLike) -> dict:
    """Copy ``pipeline_mmsa.py`` into ``checkpoint_dir`` and declare both pipelines in its ``config.json``
    (``custom_pipelines``); returns the declaration. The directory must hold a saved MMSA ``config.json``."""
    folder = Path(checkpoint_dir)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"no config.json in {folder}: save the model there first")
    config = json.loads(config_path.read_text())
    if config.get("model_type") != "mmsa":
        raise ValueError(f"{config_path}: model_type={config.get('model_type')!r}, not an MMSA checkpoint")
    shutil.copyfile(PIPELINE_FILE, folder / PIPELINE_FILE.name)
    config["custom_pipelines"] = json.loads(json.dumps(CUSTOM_PIPELINES))
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    return config["custom_pipelines"]


__all__ = [
    "FEATURE_EXTRACTION_TASK",
    "PROPERTY_PREDICTION_TASK",
    "MMSAFeatureExtractionPipeline",
    "MMSAPropertyPredictionPipeline",
    "add_custom_pipelines",
    "model_views",
    "register_pipelines",
]
