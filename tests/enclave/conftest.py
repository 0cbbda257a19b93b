"""Shared fixtures of the enclave tests (import path for the key-service helpers)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "keyservice"))
