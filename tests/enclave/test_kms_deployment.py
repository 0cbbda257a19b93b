"""Static checks that the deployment files and K's enclave config agree on the KMS path and credentials."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from ppml_hybrid.config import KeyServiceConfig, from_mapping
from ppml_hybrid.keyservice.sealing.awskms import connector_for

ROOT = Path(__file__).resolve().parents[2]
ENCLAVE = ROOT / "enclave"


def test_enclave_config_reaches_kms_through_the_parents_vsock_proxy():
    cfg = from_mapping(KeyServiceConfig, yaml.safe_load((ROOT / "conf" / "keyservice" / "enclave.yaml").read_text()),
                       "keyservice")
    assert cfg.sealed_key_path and cfg.kms_key_id and cfg.kms_region
    assert cfg.kms_endpoint == "vsock:3:8000" and callable(connector_for(cfg.kms_endpoint, cfg.kms_region))
    assert cfg.kms_ca_bundle == "/etc/ssl/certs/ca-certificates.crt"
    run = (ENCLAVE / "run.sh").read_text()
    assert re.search(r"vsock-proxy 8000 \"kms\.\$\{REGION\}\.amazonaws\.com\" 443", run)
    proxy = yaml.safe_load((ENCLAVE / "vsock-proxy.yaml").read_text())
    assert {"address": f"kms.{cfg.kms_region}.amazonaws.com", "port": 443} in proxy["allowlist"]
    assert "ca-certificates.crt" in (ENCLAVE / "Dockerfile").read_text()


def test_credentials_travel_in_the_spec_pipe_and_never_touch_a_file():
    run = (ENCLAVE / "run.sh").read_text()
    assert "169.254.169.254" in run and "api/token" in run  # IMDSv2 on the parent
    assert "aws_credentials" in run and '| socat -u - "VSOCK-CONNECT:${CID}:5001"' in run
    assert "FILE:${SPEC}" not in run
    # in the enclave the spec goes from the vsock connection into K's stdin, no file in between
    entry = (ROOT / "ppml_hybrid" / "keyservice" / "enclave_entry.py").read_text()
    assert "to_k.write(spec)" in entry and not re.search(r"\bopen\(|write_(text|bytes)", entry)
    readme = (ENCLAVE / "README.md").read_text()
    assert "aws_credentials" in readme and "kms_endpoint" in readme
