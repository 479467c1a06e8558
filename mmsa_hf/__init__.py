"""mmsa_hf: MMSA multi-modal molecular representation learning as Hugging Face classes.

Importing the package registers the MMSA classes with the transformers Auto classes.
"""

from .modeling import (
    MMSAConfig,
    MMSAForMolecularPropertyPrediction,
    MMSAForPreTraining,
    MMSAForPretraining,
    MMSAModel,
    MMSAPreTrainedModel,
)
from .processing import MMSAFeatureExtractor, MMSAImageProcessor, MMSAProcessor
from ._registration import register_auto_classes
from .hub import load_model, load_processor, push_to_hub, verify_checkpoint
from .pipelines import register_pipelines

register_auto_classes()
register_pipelines()  # pipeline("molecular-feature-extraction" / "molecular-property-prediction", model=...)

__version__ = "0.1.0"

__all__ = [
    "MMSAConfig",
    "MMSAModel",
    "MMSAPreTrainedModel",
    "MMSAForPreTraining",
    "MMSAForPretraining",
    "MMSAForMolecularPropertyPrediction",
    "MMSAFeatureExtractor",
    "MMSAImageProcessor",
    "MMSAProcessor",
    "register_auto_classes",
    "register_pipelines",
    "push_to_hub",
    "load_model",
    "load_processor",
    "verify_checkpoint",
]
