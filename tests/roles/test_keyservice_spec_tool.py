"""``python -m ppml_hybrid keyservice-spec``: K's launch spec from the consortium file's published
certificates (enclave/run.sh SPEC.json). Public only; every party and E registered once."""

from __future__ import annotations

import json

import pytest

from ppml_hybrid.identity import cert_fingerprint, make_link_identity, write_identity
from ppml_hybrid.keyservice.spec import KeyServiceSpec
from ppml_hybrid.roles.cli import main
from ppml_hybrid.roles.local import write_consortium
from ppml_hybrid.rpc.tls import EVALUATOR, PARTY, Role

NAMES = ["party-0", "party-1", "dealer", "coordinator", "keyservice", "evaluator"]


@pytest.fixture
def consortium(tmp_path):
    keys = tmp_path / "keys"
    for n in NAMES:  # each role's own key pair; only the certificates are published
        write_identity(make_link_identity(n), out_dir=keys, role=n)
    path = tmp_path / "consortium.yaml"
    write_consortium(path, names=NAMES, ports=list(range(29500, 29500 + len(NAMES))), keys=keys)
    return path, keys


@pytest.mark.parametrize("split,with_e", [(3, True), (5, False)])
def test_the_spec_registers_the_published_certificates_and_holds_no_key(consortium, tmp_path, capsys, split, with_e):
    path, keys = consortium
    out = tmp_path / "spec.json"
    assert main(["keyservice-spec", "--consortium", str(path), "--out", str(out), f"split_layer={split}",
                 "he=insecure_test", "keyservice=enclave"]) == 0
    assert "registered roles" in capsys.readouterr().out
    text = out.read_text()
    assert "PRIVATE KEY" not in text
    spec = KeyServiceSpec.from_json(json.loads(text))
    fp = {n: cert_fingerprint((keys / f"{n}.crt").read_bytes()) for n in NAMES}
    expected = {fp["party-0"]: Role(kind=PARTY, party=1), fp["party-1"]: Role(kind=PARTY, party=2)}
    if with_e:  # all-MPC runs use K for the noise only: no evaluator is registered
        expected[fp["evaluator"]] = Role(kind=EVALUATOR)
    assert dict(spec.registry.roles) == expected
    spec.registry.validate(parties=2)
    assert spec.keyservice.attestation == "nsm" and spec.run.parties == 2
