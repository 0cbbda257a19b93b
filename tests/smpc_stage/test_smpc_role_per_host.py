"""Each role started on its own, as on separate hosts: only the rendezvous section is shared."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ppml_hybrid.smpc_stage.launcher import free_port


@pytest.mark.parametrize("parties", [2, 3])
def test_independently_started_roles_meet_and_pass_the_check(parties):
    port = free_port()
    common = ["--parties", str(parties), "--master-addr", "127.0.0.1", "--master-port", str(port),
              "--timeout-s", "60", "--values", "64"]
    procs = [
        subprocess.Popen([sys.executable, "-m", "ppml_hybrid.smpc_stage", "check", "--rank", str(rank), *common],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for rank in range(parties + 1)  # the last rank is the dealer
    ]
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=120)
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    for rank, (proc, out) in enumerate(zip(procs, outputs)):
        assert proc.returncode == 0, f"rank {rank}:\n{out[-2000:]}"
    for rank in range(parties):
        assert f"party {rank}: check passed" in outputs[rank]
    assert "dealer finished" in outputs[parties]


def test_a_missing_peer_fails_with_non_zero_exit_naming_the_rank():
    port = free_port()
    proc = subprocess.run(
        [sys.executable, "-m", "ppml_hybrid.smpc_stage", "check", "--rank", "1", "--parties", "2",
         "--master-addr", "127.0.0.1", "--master-port", str(port), "--timeout-s", "3"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode != 0
    assert "rank 1" in proc.stdout + proc.stderr
