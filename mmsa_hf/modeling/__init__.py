"""MMSA models (flat folder, single-level relative imports: the files double as Hub remote code)."""

from .configuration_mmsa import (
    ATOM_FEATURE_VOCAB_SIZES,
    BOND_FEATURE_VOCAB_SIZES,
    CONFORMER_STATUSES,
    MODALITIES,
    PRESETS,
    MMSAConfig,
)
from .modeling_mmsa import (
    MMSAForMolecularPropertyPrediction,
    MMSAForPreTraining,
    MMSAForPretraining,
    MMSAModel,
    MMSAPreTrainedModel,
)
from .outputs import (
    MMSAEncoderOutput,
    MMSAModelOutput,
    MMSAPretrainingOutput,
    MMSAPropertyPredictionOutput,
)

__all__ = [
    "ATOM_FEATURE_VOCAB_SIZES",
    "BOND_FEATURE_VOCAB_SIZES",
    "CONFORMER_STATUSES",
    "MODALITIES",
    "PRESETS",
    "MMSAConfig",
    "MMSAPreTrainedModel",
    "MMSAModel",
    "MMSAForPreTraining",
    "MMSAForPretraining",
    "MMSAForMolecularPropertyPrediction",
    "MMSAEncoderOutput",
    "MMSAModelOutput",
    "MMSAPretrainingOutput",
    "MMSAPropertyPredictionOutput",
]
