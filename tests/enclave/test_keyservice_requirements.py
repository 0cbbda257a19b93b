"""The enclave image's requirements: K's import closure only, pinned to the lock, every wheel hashed,
regenerated here and compared (a lock change that is not carried into the image fails)."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUIREMENTS = ROOT / "enclave" / "requirements-keyservice.txt"


def _tool():
    spec = importlib.util.spec_from_file_location("keyservice_requirements",
                                                  ROOT / "enclave" / "keyservice_requirements.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_committed_requirements_match_the_lock():
    assert REQUIREMENTS.read_text() == _tool().requirements(), (
        "enclave/requirements-keyservice.txt is stale: run .venv/bin/python enclave/keyservice_requirements.py")


def test_requirements_hold_k_and_nothing_heavy_each_pinned_and_hashed():
    text = REQUIREMENTS.read_text()
    pins = dict(re.findall(r"^([a-z0-9-]+)==(\S+) \\$", text, flags=re.M))
    for needed in ("openfhe", "grpcio", "protobuf", "cryptography", "cbor2", "asn1crypto", "numpy", "scipy", "opendp"):
        assert needed in pins, needed
    for heavy in ("torch", "crypten", "opacus", "monai", "hydra-core", "omegaconf", "antlr4-python3-runtime",
                  "pandas", "scikit-learn", "nvidia-cudnn-cu12"):
        assert heavy not in pins, heavy
    assert pins["openfhe"] == "1.6.1.0.22.4"  # the cp310 wheel (the enclave's Python 3.10)
    blocks = text.split("==")[1:]
    assert all("--hash=sha256:" in b for b in blocks)


def test_build_installs_from_the_hashed_requirements_without_dependencies():
    build = (ROOT / "enclave" / "build.sh").read_text()
    docker = (ROOT / "enclave" / "Dockerfile").read_text()
    assert "--require-hashes" in build and "requirements-keyservice.txt" in build
    assert "--require-hashes" in docker and "--no-deps" in docker
