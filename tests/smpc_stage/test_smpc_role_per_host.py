"""Each MPC role started on its own, as on separate hosts: its own key pair (keygen), the
shared consortium file (addresses, pinned certificates), mutually authenticated TLS links."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ppml_hybrid.identity import make_link_identity, write_identity
from ppml_hybrid.smpc_stage.launcher import free_port

CHECK = [sys.executable, "-m", "ppml_hybrid.smpc_stage", "check"]


def _roles(parties):
    return [f"party-{r}" for r in range(parties)] + ["dealer"]


def _consortium(tmp_path: Path, parties: int, *, keygen_cli: bool = False) -> Path:
    """Every role makes its own key pair in its own folder; the consortium file pins the certificates."""
    roles = {}
    for role in _roles(parties):
        home = tmp_path / role
        if keygen_cli:
            out = subprocess.run([sys.executable, "-m", "ppml_hybrid", "keygen", "--role", role, "--out", str(home)],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 0, out.stderr
            assert "fingerprint " in out.stdout
        else:
            write_identity(make_link_identity(role), out_dir=home, role=role)
        roles[role] = {"host": "127.0.0.1", "port": free_port(), "cert": f"{role}/{role}.crt"}
    path = tmp_path / "consortium.yaml"
    path.write_text(yaml.safe_dump({"roles": roles}))
    return path


def _start(tmp_path: Path, consortium: Path, role: str, *extra: str, identity: str = None) -> subprocess.Popen:
    ident = identity or str(tmp_path / role / role)
    return subprocess.Popen([*CHECK, "--role", role, "--identity", ident, "--consortium", str(consortium),
                             "--timeout-s", "60", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(procs, timeout=120):
    outputs = []
    try:
        for proc in procs:
            out, _ = proc.communicate(timeout=timeout)
            outputs.append(out)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return outputs


@pytest.mark.parametrize("parties", [2, 3])
def test_independently_started_roles_meet_and_pass_the_check(tmp_path, parties):
    consortium = _consortium(tmp_path, parties, keygen_cli=parties == 2)
    procs = [_start(tmp_path, consortium, role, "--values", "64") for role in _roles(parties)]
    outputs = _finish(procs)
    for role, proc, out in zip(_roles(parties), procs, outputs):
        assert proc.returncode == 0, f"{role}:\n{out[-2000:]}"
    for rank in range(parties):
        assert f"party-{rank}: check passed" in outputs[rank]
    assert "dealer finished" in outputs[parties]


def test_a_missing_peer_fails_with_non_zero_exit_naming_the_role_and_address(tmp_path):
    consortium = _consortium(tmp_path, 2)
    proc = subprocess.run([*CHECK, "--role", "party-1", "--identity", str(tmp_path / "party-1" / "party-1"),
                           "--consortium", str(consortium), "--timeout-s", "3"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 6
    err = proc.stdout + proc.stderr
    assert "party-0 at 127.0.0.1:" in err and "LinkSetupError" in err


def test_an_impostor_with_its_own_key_is_refused_by_every_honest_role(tmp_path):
    """party-1's host is taken over: the attacker makes its own key pair and edits its own copy
    of the consortium file to pin it. The honest roles, with the real file, refuse it."""
    consortium = _consortium(tmp_path, 2)
    write_identity(make_link_identity("party-1"), out_dir=tmp_path / "mallory", role="party-1")
    forged = yaml.safe_load(consortium.read_text())
    forged["roles"]["party-1"]["cert"] = "mallory/party-1.crt"
    forged_path = tmp_path / "forged.yaml"
    forged_path.write_text(yaml.safe_dump(forged))
    procs = [_start(tmp_path, consortium, "party-0", "--timeout-s", "8"),
             _start(tmp_path, forged_path, "party-1", "--timeout-s", "8",
                    identity=str(tmp_path / "mallory" / "party-1")),
             _start(tmp_path, consortium, "dealer", "--timeout-s", "8")]
    party0, impostor, dealer = _finish(procs)
    assert all(p.returncode != 0 for p in procs)
    port1 = yaml.safe_load(consortium.read_text())["roles"]["party-1"]["port"]
    # the dealer dials party-1 and checks its certificate against the pinned one
    assert "PeerIdentityError" in dealer and f"party-1 at 127.0.0.1:{port1}" in dealer
    # party-0 accepts only pinned client certificates: the impostor's handshake fails there
    assert "TLS handshake with a connecting host failed" in party0
    assert "no authenticated link from party-1" in party0
    assert "check passed" not in party0 + impostor


def test_a_site_with_a_different_run_config_is_refused_before_any_mpc_message(tmp_path):
    consortium = _consortium(tmp_path, 2)
    procs = [_start(tmp_path, consortium, "party-0", "--values", "64"),
             _start(tmp_path, consortium, "party-1", "--values", "65"),
             _start(tmp_path, consortium, "dealer", "--values", "64")]
    outputs = _finish(procs)
    assert all(p.returncode != 0 for p in procs[:2])
    assert "ConfigMismatchError" in outputs[0] + outputs[1]
    assert "different run config" in outputs[0] + outputs[1]


def test_a_party_killed_mid_run_stops_every_other_role_naming_it(tmp_path):
    """party-1's host dies in the middle of the run: party-0 and the dealer stop with an error
    naming party-1 and its address, well before their timeout, and no process is left."""
    import signal
    import time

    consortium = _consortium(tmp_path, 2)
    port1 = yaml.safe_load(consortium.read_text())["roles"]["party-1"]["port"]
    import threading

    procs = [_start(tmp_path, consortium, role, "--values", "4096", "--repeat", "100000") for role in _roles(2)]
    # Kill only once party-0 says its links carried a whole check (a fixed wait raced the start-up
    # on a loaded machine: killed before the links were up, the others waited out their timeout).
    lines: list = []
    up = threading.Event()

    def read_party0() -> None:
        for line in procs[0].stdout:
            lines.append(line)
            if "first check done, links up" in line:
                up.set()

    reader = threading.Thread(target=read_party0, daemon=True)
    reader.start()
    try:
        assert up.wait(90), "party-0 never reported its links up:\n" + "".join(lines)[-1500:]
        assert all(p.poll() is None for p in procs), "the soak ended early"
        procs[1].send_signal(signal.SIGKILL)
        start = time.time()
        procs[0].wait(60)
        reader.join(10)
        outputs = ["".join(lines), *_finish([procs[2]], timeout=60)]
        took = time.time() - start
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    procs[1].wait(10)
    assert took < 30, f"the other roles took {took:.0f} s to stop (their timeout is 60 s)"
    for role, proc, out in zip(("party-0", "dealer"), (procs[0], procs[2]), outputs):
        assert proc.returncode not in (0, None), f"{role} exited {proc.returncode}:\n{out[-1500:]}"
    assert f"party-1 at 127.0.0.1:{port1}" in outputs[0], outputs[0][-1500:]
    assert all(p.poll() is not None for p in procs)
