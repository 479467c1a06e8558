"""MMSA processing: molecules -> graph, 3D conformer and image views (see `docs/batch-format.md`).

The modules in this folder import each other with single-level relative imports only, so that they also work as
Hub remote code (copied next to each other by transformers).
"""

from .feature_extraction_mmsa import (
    ATOM_FEATURE_VOCAB_SIZES,
    BOND_FEATURE_VOCAB_SIZES,
    CONFORMER_STATUSES,
    MMSAFeatureExtractor,
    MoleculeError,
    conformer_status_names,
)
from .image_processing_mmsa import MMSAImageProcessor, decode_png, encode_png
from .processing_mmsa import VIEWS, MMSAProcessor


__all__ = [
    "ATOM_FEATURE_VOCAB_SIZES",
    "BOND_FEATURE_VOCAB_SIZES",
    "CONFORMER_STATUSES",
    "MMSAFeatureExtractor",
    "MMSAImageProcessor",
    "MMSAProcessor",
    "MoleculeError",
    "VIEWS",
    "conformer_status_names",
    "decode_png",
    "encode_png",
]
