"""Model blocks, split validation and the plaintext twin.

The torch modules (``activations``, ``plaintext``) load on first use, not with the package:
the key service imports ``model.spec`` (shapes and splits, plain Python) and must not carry
PyTorch into its enclave image (tests/keyservice/test_import_closure.py).
"""

from typing import Any

from ppml_hybrid.model.spec import BlockShape, block_shapes, valid_splits, validate_split

_LAZY = {"PolyActivation": "activations", "Square": "activations", "BlockModel": "plaintext",
         "build_model": "plaintext"}

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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"ppml_hybrid.model.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'ppml_hybrid.model' has no attribute {name!r}")
