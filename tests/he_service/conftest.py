"""Fixtures: K and E as separate processes (real gRPC + mTLS on loopback); parties are test-side clients."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for p in (HERE.parent / "keyservice", HERE.parent / "he_stage"):  # shared helpers of both suites
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
