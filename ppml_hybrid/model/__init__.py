"""Model blocks, split validation and the plaintext twin."""

from ppml_hybrid.model.activations import PolyActivation, Square
from ppml_hybrid.model.plaintext import BlockModel, build_model
from ppml_hybrid.model.spec import BlockShape, block_shapes, valid_splits, validate_split

__all__ = [
    "BlockModel",
    "BlockShape",
    "PolyActivation",
    "Square",
    "block_shapes",
    "build_model",
    "valid_splits",
    "validate_split",
]
