"""The privacy tests share helpers in this folder (party programs must be importable by name)."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
for folder in (HERE, HERE.parent / "keyservice"):  # ks_helpers: the key-service test helpers
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
