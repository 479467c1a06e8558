"""Register the MMSA classes with the transformers Auto classes (idempotent)."""

from __future__ import annotations


def register_auto_classes() -> None:
    """Make ``AutoConfig``/``AutoModel*``/``AutoProcessor`` resolve the MMSA classes.

    Safe to call more than once (``exist_ok=True`` everywhere).
    """
    from transformers import (
        AutoConfig,
        AutoFeatureExtractor,
        AutoImageProcessor,
        AutoModel,
        AutoModelForPreTraining,
        AutoProcessor,
    )

    from .modeling import (
        MMSAConfig,
        MMSAForMolecularPropertyPrediction,
        MMSAForPreTraining,
        MMSAModel,
    )
    from .processing import MMSAFeatureExtractor, MMSAImageProcessor, MMSAProcessor

    AutoConfig.register(MMSAConfig.model_type, MMSAConfig, exist_ok=True)
    AutoModel.register(MMSAConfig, MMSAModel, exist_ok=True)
    AutoModelForPreTraining.register(MMSAConfig, MMSAForPreTraining, exist_ok=True)
    try:  # property prediction is a sequence-level task: the closest transformers Auto class
        from transformers import AutoModelForSequenceClassification

        AutoModelForSequenceClassification.register(
            MMSAConfig, MMSAForMolecularPropertyPrediction, exist_ok=True
        )
    except ImportError:  # pragma: no cover
        pass
    AutoFeatureExtractor.register(MMSAConfig, MMSAFeatureExtractor, exist_ok=True)
    AutoImageProcessor.register(MMSAConfig, slow_image_processor_class=MMSAImageProcessor, exist_ok=True)
    AutoProcessor.register(MMSAConfig, MMSAProcessor, exist_ok=True)
