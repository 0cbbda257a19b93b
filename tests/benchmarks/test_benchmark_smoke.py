"""Every benchmark script with a ``--smoke`` size runs here, so a script that rots fails CI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script, summary", [
    ("mpc_links.py", "ratio"), ("smpc_stage.py", "ratio"), ("dp_step_overhead.py", "ratio"), ("dp_audit.py", "ratio"),
    ("he_head.py", "ratio"),  # plaintext_accuracy, hybrid_speed, hybrid_accuracy: through run_all.py (test_run_all.py)
    ("hybrid_gradient_error.py", "ratio check")])
def test_benchmark_smoke_run(script, summary):
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--smoke"], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert summary in out.stdout


@pytest.mark.slow
def test_dp_audit_meets_its_targets(tmp_path):
    """The enclave noise's full audit (benchmarks/dp_audit.py --check, about 1.5 min): 10^5 draws
    per setting through K and the parties' opening fit the discrete Gaussian, std within 1%;
    the canary audit stays below the accounted epsilon and flags the quarter-noise control."""
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "dp_audit.py"), "--check", "--repeats", "5",
                          "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=1200, cwd=ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
