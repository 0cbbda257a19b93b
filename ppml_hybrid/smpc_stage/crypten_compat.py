"""Import CrypTen 0.4.1 on current PyTorch.

CrypTen's ONNX converter imports ``torch.onnx._internal.registration``, which PyTorch 2.x
removed. Only the converter (``crypten.nn.from_pytorch``/``from_onnx``) uses it; the core
(MPCTensor, crypten.nn modules, multiprocess launch) does not. We register an empty stand-in
before importing CrypTen, so the converter's import succeeds and the converter itself is
never called: this project builds its MPC layers directly.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_MISSING_MODULE = "torch.onnx._internal.registration"


def import_crypten() -> Any:
    """Return the ``crypten`` module, installing the stand-in only if PyTorch lacks the module."""
    if "crypten" in sys.modules:
        return sys.modules["crypten"]
    try:
        importlib.import_module(_MISSING_MODULE)
    except ModuleNotFoundError:
        stand_in = types.ModuleType(_MISSING_MODULE)
        stand_in.registry = None  # only read by the ONNX converter, which we never call
        sys.modules[_MISSING_MODULE] = stand_in
    return importlib.import_module("crypten")
