"""Static checks of enclave/: policies, pinned base image, scripts, enclave configs."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from ppml_hybrid.config import KeyServiceConfig, from_mapping

ROOT = Path(__file__).resolve().parents[2]
ENCLAVE = ROOT / "enclave"
PCR_KEYS = {f"kms:RecipientAttestation:PCR{i}" for i in (0, 1, 2, 8)}
USE = {"kms:Decrypt", "kms:GenerateDataKey"}


def load(name):
    return json.loads((ENCLAVE / name).read_text())


def _as_list(x):
    return x if isinstance(x, list) else [x]


def test_kms_key_policy_allows_use_only_under_pcr_conditions():
    policy = load("kms-key-policy.json")
    allows = [s for s in policy["Statement"] if s["Effect"] == "Allow" and USE & set(_as_list(s["Action"]))]
    assert allows, "no statement allows Decrypt/GenerateDataKey"
    for s in allows:
        assert set(_as_list(s["Action"])) == USE
        assert PCR_KEYS <= set(s["Condition"]["StringEqualsIgnoreCase"])
    for s in policy["Statement"]:
        if s["Effect"] == "Allow" and s not in allows:
            assert not any(a in ("kms:*", "kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt")
                           for a in _as_list(s["Action"])), s["Sid"]


def test_kms_key_policy_has_an_explicit_deny_per_pcr():
    policy = load("kms-key-policy.json")
    denied = set()
    for s in policy["Statement"]:
        if s["Effect"] == "Deny" and USE <= set(_as_list(s["Action"])):
            assert s["Principal"] == "*"
            cond = s["Condition"]["StringNotEqualsIgnoreCase"]
            assert len(cond) == 1  # one key per Deny: keys in one block would AND, denying too little
            denied |= set(cond)
    assert denied == PCR_KEYS


def test_parent_iam_policy_carries_pcr_conditions_and_denies_unattested_use():
    policy = load("iam-parent-policy.json")
    allow = [s for s in policy["Statement"] if s["Effect"] == "Allow" and USE & set(_as_list(s["Action"]))]
    assert allow and all(PCR_KEYS <= set(s["Condition"]["StringEqualsIgnoreCase"]) for s in allow)
    deny = [s for s in policy["Statement"] if s["Effect"] == "Deny"]
    assert any(USE <= set(_as_list(s["Action"])) and
               s["Condition"]["Null"].get("kms:RecipientAttestation:ImageSha384") == "true" for s in deny)


def test_dockerfile_base_image_pinned_by_digest_and_no_runtime_download():
    text = (ENCLAVE / "Dockerfile").read_text()
    froms = [ln for ln in text.splitlines() if ln.strip().upper().startswith("FROM ")]
    assert froms and all(re.search(r"@sha256:[0-9a-f]{64}\b", ln) for ln in froms)
    assert "--no-index" in text
    # nothing from a live package mirror: no Debian package in the image, none fetched by the build
    assert not re.search(r"\b(apt-get|dpkg|apk)\b", text)
    assert not re.search(r"\bapt-get\b", (ENCLAVE / "build.sh").read_text())
    assert 'ENTRYPOINT ["python", "-m", "ppml_hybrid.keyservice.enclave_entry"]' in text


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash not installed")
@pytest.mark.parametrize("script", ["build.sh", "run.sh"])
def test_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ENCLAVE / script)], check=True)


def test_build_script_records_pcrs():
    text = (ENCLAVE / "build.sh").read_text()
    assert "nitro-cli build-enclave" in text and "pcrs.json" in text


def test_enclave_configs():
    alloc = yaml.safe_load((ENCLAVE / "allocator.yaml").read_text())
    run = load("enclave-config.json")
    assert alloc["memory_mib"] >= run["memory_mib"] and alloc["cpu_count"] >= run["cpu_count"]
    assert run["debug_mode"] is False
    proxy = yaml.safe_load((ENCLAVE / "vsock-proxy.yaml").read_text())
    assert [e["port"] for e in proxy["allowlist"]] == [443]
    assert all(re.fullmatch(r"kms\.[a-z0-9-]+\.amazonaws\.com", e["address"]) for e in proxy["allowlist"])


@pytest.mark.parametrize("name", ["local", "enclave"])
def test_keyservice_configs_load(name):
    cfg = from_mapping(KeyServiceConfig, yaml.safe_load((ROOT / "conf" / "keyservice" / f"{name}.yaml").read_text()),
                       "keyservice")
    assert cfg.allow_debug_enclave is False
    assert cfg.attestation == ("nsm" if name == "enclave" else "development")
    assert not hasattr(cfg, "allow_development_attestation")  # a per-host choice, never shared config


def test_operator_readme_covers_the_path():
    text = (ENCLAVE / "README.md").read_text()
    for step in ("allocator.yaml", "build.sh", "pcrs.json", "kms-key-policy", "iam-parent-policy", "run.sh",
                 "vsock-proxy", "expected_pcrs"):
        assert step in text


def test_run_script_listens_for_the_ready_line_before_the_enclave_boots():
    """The enclave's entry dials vsock 5002 as soon as K is up; run.sh must already listen there
    (the old order started the listener only after run-enclave returned, and the line was lost)."""
    text = (ENCLAVE / "run.sh").read_text()
    listen = text.index("VSOCK-LISTEN:5002")
    boot = text.index("nitro-cli run-enclave")
    assert listen < boot
    from ppml_hybrid.keyservice import enclave_entry

    assert (enclave_entry.PARENT_CID, enclave_entry.READY_PORT, enclave_entry.SPEC_PORT) == (3, 5002, 5001)
