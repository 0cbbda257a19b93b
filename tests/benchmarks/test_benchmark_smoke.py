"""Every benchmark script with a ``--smoke`` size runs here, so a script that rots fails CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["mpc_links.py", "smpc_stage.py", "dp_step_overhead.py", "dp_audit.py"])
def test_benchmark_smoke_run(script):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "ratio" in out.stdout
