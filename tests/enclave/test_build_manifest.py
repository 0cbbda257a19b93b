"""The committed manifest of the enclave image's inputs is what the Dockerfile, the pinned
requirements and the package tree give today (enclave/build_manifest.py)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _tool():
    spec = importlib.util.spec_from_file_location("build_manifest", ROOT / "enclave" / "build_manifest.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_manifest_is_current():
    committed = json.loads((ROOT / "enclave" / "build-manifest.json").read_text())
    assert committed == _tool().manifest(), (
        "enclave/build-manifest.json is stale: run .venv/bin/python enclave/build_manifest.py and commit it")


def test_manifest_pins_every_input():
    m = _tool().manifest()
    assert m["base_images"] and all(re.search(r"@sha256:[0-9a-f]{64}$", b) for b in m["base_images"])
    assert m["wheels"] and all(w["hashes"] and "==" in w["requirement"] for w in m["wheels"])
    assert not any(w["requirement"].lower().startswith(("torch", "hydra")) for w in m["wheels"])
    assert m["debian_packages"] == [] and m["entrypoint"] == ["python", "-m", "ppml_hybrid.keyservice.enclave_entry"]
    assert "ppml_hybrid/keyservice/enclave_entry.py" in m["project_wheel_files"]
    assert "ppml_hybrid/rpc/attestation/data/aws_nitro_enclaves_root_g1.pem" in m["project_wheel_files"]
