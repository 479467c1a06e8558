# Copyright 2025 The mmsa_hf Authors. Licensed under the MIT licence.
"""transformers pipelines for MMSA checkpoints: molecular feature extraction and molecular property prediction.

This file is self-contained (torch, numpy and transformers only; no ``mmsa_hf`` import): ``mmsa_hf.pipelines``
registers its classes with ``transformers.pipelines.PIPELINE_REGISTRY``, and ``mmsa_hf.hub.save_for_hub`` copies it
next to a checkpoint as Hub remote code, with ``custom_pipelines`` in ``config.json``, so that
``pipeline(task, model=repo, trust_remote_code=True)`` runs where ``mmsa_hf`` is not installed.

Inputs: a SMILES string (or RDKit ``Mol``), a list of them, a ``datasets`` column (``ds["smiles"]``) or a
``KeyDataset`` (streamed). ``batch_size=`` molecules go through one model forward; ``device=`` as for every
pipeline. Invalid molecules follow ``on_error`` (default: the processor's): ``"raise"`` a ``ValueError`` naming the
SMILES, ``"mask"`` a row with ``valid=False``, NaN values and the reason in ``error``, or ``"skip"`` (left out of
the returned list). Only the views the model reads are featurized (a graph-only model: no conformer, no image).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import Pipeline


VIEW_ORDER = ("graph", "image", "geometry")
ON_ERROR = ("raise", "mask", "skip")
EMBEDDINGS = ("unified", "fused", "graph", "image", "geometry")
FEATURE_EXTRACTION_TASK = "molecular-feature-extraction"
PROPERTY_PREDICTION_TASK = "molecular-property-prediction"


def model_views(model) -> tuple[str, ...]:
    """The processor views ``model`` reads: "graph" always; image / geometry when enabled and read (a property
    model reads ``config.downstream_modalities``). Same rule as ``mmsa_hf.training.common.views_for_config``."""
    config = model.config
    enabled = list(config.enabled_modalities)
    is_property_model = hasattr(model, "classifier")
    read = list(config.downstream_modalities or enabled) if is_property_model else enabled
    return tuple(view for view in VIEW_ORDER if view == "graph" or view in read)


def _as_input_list(inputs: Any) -> Any:
    """A ``datasets`` column, tuple or array of SMILES -> a list (which the base ``Pipeline`` batches)."""
    if isinstance(inputs, (str, list, dict)) or not hasattr(inputs, "__len__") or not hasattr(inputs, "__getitem__"):
        return inputs
    if isinstance(inputs, torch.utils.data.Dataset):  # e.g. KeyDataset: streamed by the base class
        return inputs
    if hasattr(inputs, "column_names"):
        raise ValueError(f"got a whole datasets.Dataset (columns {inputs.column_names}); pass its SMILES column, "
                         "e.g. pipe(ds['smiles']) or pipe(KeyDataset(ds, 'smiles'))")
    return list(inputs)


class _MMSAPipeline(Pipeline):
    """Shared preprocess (one molecule -> one record) and batching (records -> one processor batch)."""

    _load_processor = True
    _load_tokenizer = False
    _load_feature_extractor = False
    _load_image_processor = False
    _load_video_processor = False

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.processor is None:
            raise ValueError(f"{type(self).__name__}: the checkpoint has no processor (processor_config.json); "
                             "pass processor=MMSAProcessor(...) or save one next to the model")
        self.views = model_views(self.model)
        self.processor = self.processor.with_views(self.views)
        self.model.eval()

    def __call__(self, inputs, *args, **kwargs):
        outputs = super().__call__(_as_input_list(inputs), *args, **kwargs)
        if isinstance(outputs, list):
            return [row for row in outputs if row is not None]
        if outputs is None:
            raise ValueError(f"{inputs!r} is not a valid molecule (on_error='skip' left it out)")
        if isinstance(outputs, dict):
            return outputs
        return (row for row in outputs if row is not None)

    def _check_on_error(self, on_error: str | None) -> str:
        on_error = self.processor.on_error if on_error is None else on_error
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error={on_error!r}; use one of {ON_ERROR}")
        return on_error

    def preprocess(self, molecule, on_error: str | None = None) -> dict[str, list]:
        on_error = self._check_on_error(on_error)
        try:
            record, error = self.processor.featurize_one(molecule, 0, views=self.views), None
        except Exception as err:  # MoleculeError, or any RDKit failure on this molecule
            if on_error == "raise":
                raise ValueError(f"invalid molecule {molecule!r}: {err}. Pass on_error='mask' or on_error='skip' "
                                 "to continue past invalid molecules.") from err
            record, error = self.processor.placeholder_record(0, views=self.views), f"{type(err).__name__}: {err}"
        return {"inputs": [molecule], "records": [record], "errors": [error], "skip": [on_error == "skip"]}

    @staticmethod
    def _collate(items: list[dict[str, list]]) -> dict[str, list]:
        return {key: [value for item in items for value in item[key]] for key in items[0]}

    def get_iterator(self, inputs, num_workers, batch_size, preprocess_params, forward_params, postprocess_params):
        """Featurize one molecule per item, run ``batch_size`` of them through one forward, then post-process each
        row (given to ``postprocess`` as a batch of one, exactly as a single input is)."""
        from torch.utils.data import DataLoader
        from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

        if isinstance(inputs, torch.utils.data.Dataset) or isinstance(inputs, list):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:  # a generator: featurized lazily, one at a time
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
        loader = DataLoader(dataset, num_workers=num_workers, batch_size=batch_size, collate_fn=self._collate)
        for batch in loader:
            outputs = self.forward(batch, **forward_params)
            for row in range(len(batch["inputs"])):
                one = {k: (v[row : row + 1] if v is not None else None) for k, v in outputs.items()}
                yield self.postprocess(one, **postprocess_params)

    def _model_batch(self, model_inputs: dict[str, list]) -> dict[str, Any]:
        batch = self.processor.collate(model_inputs["records"], return_tensors="pt", views=self.views)
        return {key: value.to(self.device) if torch.is_tensor(value) else value for key, value in batch.items()}

    @staticmethod
    def _row_header(model_outputs: dict[str, Any]) -> dict[str, Any] | None:
        """``None`` for a skipped molecule; else the input, canonical SMILES, validity and error of the row."""
        valid = bool(model_outputs["valid"][0])
        if not valid and model_outputs["skip"][0]:
            return None
        return {"smiles": model_outputs["inputs"][0], "canonical_smiles": model_outputs["canonical_smiles"][0] or None,
                "valid": valid, "error": model_outputs["errors"][0]}


class MMSAFeatureExtractionPipeline(_MMSAPipeline):
    """SMILES -> MMSA embeddings: ``{"smiles", "canonical_smiles", "valid", "error", "embedding"}`` per molecule.

    Args (at construction or call):
        embedding (`str`, defaults to `"unified"`): ``unified`` | ``fused`` | ``graph`` | ``image`` | ``geometry``.
        per_view (`bool`): also return ``graph_embedding`` / ``image_embedding`` / ``geometry_embedding`` (the
            views the model has; ``None`` for a view it lacks).
        return_tensors (`bool`): torch tensors instead of lists of floats.
        on_error (`str`): ``raise`` | ``mask`` | ``skip`` (default: the processor's).
    """

    def _sanitize_parameters(self, embedding=None, per_view=None, return_tensors=None, on_error=None, **kwargs):
        if embedding is not None and embedding not in EMBEDDINGS:
            raise ValueError(f"embedding={embedding!r}; use one of {EMBEDDINGS}")
        forward = {"embedding": embedding} if embedding is not None else {}
        if per_view is not None:
            forward["per_view"] = bool(per_view)
        post = {"return_tensors": bool(return_tensors)} if return_tensors is not None else {}
        return ({"on_error": on_error} if on_error is not None else {}), forward, post

    def _forward(self, model_inputs, embedding: str = "unified", per_view: bool = False):
        output = self.model(**self._model_batch(model_inputs))
        keys = [embedding] + ([v for v in VIEW_ORDER if v != embedding] if per_view else [])
        values = {f"{key}_embedding": getattr(output, f"{key}_embedding") for key in keys}
        if values[f"{embedding}_embedding"] is None:
            raise ValueError(f"embedding={embedding!r}: this model has no {embedding} view "
                             f"(it reads {list(self.views)})")
        return {"inputs": model_inputs["inputs"], "errors": model_inputs["errors"], "skip": model_inputs["skip"],
                "canonical_smiles": [r["smiles"] for r in model_inputs["records"]], "valid": output.valid_mask,
                "embedding_key": [embedding] * len(model_inputs["inputs"]), **values}

    def postprocess(self, model_outputs, return_tensors: bool = False):
        row = self._row_header(model_outputs)
        if row is None:
            return None
        valid = row["valid"]
        for key in [k for k in model_outputs if k.endswith("_embedding")]:
            value = model_outputs[key]
            if value is not None:
                value = value[0].float() if valid else torch.full_like(value[0], float("nan"), dtype=torch.float32)
                value = value if return_tensors else value.tolist()
            name = "embedding" if key == f"{model_outputs['embedding_key'][0]}_embedding" else key
            row[name] = value
        return row


class MMSAPropertyPredictionPipeline(_MMSAPipeline):
    """SMILES -> properties: ``{"smiles", "canonical_smiles", "valid", "error", "predictions": {label: value}}``.

    Values are probabilities (classification: sigmoid per task, softmax over classes for multi-class) or values in
    label units (regression), labelled with the checkpoint's ``config.id2label``; NaN for a masked molecule.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not hasattr(self.model, "classifier"):
            raise ValueError(f"{PROPERTY_PREDICTION_TASK} needs a fine-tuned MMSAForMolecularPropertyPrediction "
                             f"checkpoint, got {type(self.model).__name__}")
        config = self.model.config
        self.labels = [str(config.id2label.get(i, f"LABEL_{i}")) for i in range(config.num_labels)]

    def _sanitize_parameters(self, on_error=None, **kwargs):
        return ({"on_error": on_error} if on_error is not None else {}), {}, {}

    def _forward(self, model_inputs):
        output = self.model(**self._model_batch(model_inputs))
        return {"inputs": model_inputs["inputs"], "errors": model_inputs["errors"], "skip": model_inputs["skip"],
                "canonical_smiles": [r["smiles"] for r in model_inputs["records"]], "valid": output.valid_mask,
                "predictions": output.predictions}

    def postprocess(self, model_outputs):
        row = self._row_header(model_outputs)
        if row is None:
            return None
        values = np.asarray(model_outputs["predictions"][0].float().cpu(), dtype=np.float64)
        row["predictions"] = {label: float(value) for label, value in zip(self.labels, values)}
        return row


#: ``config.json`` ``custom_pipelines`` entry (transformers' custom-pipeline format; ``impl`` = module.Class).
CUSTOM_PIPELINES = {
    FEATURE_EXTRACTION_TASK: {"impl": "pipeline_mmsa.MMSAFeatureExtractionPipeline", "pt": ["AutoModel"],
                              "tf": [], "type": "multimodal"},
    PROPERTY_PREDICTION_TASK: {"impl": "pipeline_mmsa.MMSAPropertyPredictionPipeline",
                               "pt": ["AutoModelForSequenceClassification"], "tf": [], "type": "multimodal"},
}
