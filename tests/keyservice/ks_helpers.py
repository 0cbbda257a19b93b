"""Shared helpers of the key-service and evaluator-service tests."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from pathlib import Path
from typing import Optional

import numpy as np
import yaml

from ppml_hybrid.config import HEConfig, KeyServiceConfig, ModelConfig, from_mapping
from ppml_hybrid.he_stage.codec import encrypt_batch
from ppml_hybrid.he_stage.keys import load_public_material
from ppml_hybrid.he_stage.keys import serialize_ciphertext
import dataclasses

from ppml_hybrid.he_stage.runspec import HERunSpec
from ppml_hybrid.roles.local_services import make_local_pki, party_name
from ppml_hybrid.rpc.tls import EVALUATOR, ORCHESTRATOR, make_client_pki

ROOT = Path(__file__).resolve().parents[2]
# parties' reconstructed fixed-point values vs round(v * 2^16) of the float64 model: one unit of
# rounding plus the decoding error at |v + R| ~ 2^(V + 32) with V <= 4 here (about 2^(V+32-52));
# allow 8 units (1.2e-4).
TOL_UNITS = 8


def load_he(name: str) -> HEConfig:
    return from_mapping(HEConfig, yaml.safe_load((ROOT / "conf" / "he" / f"{name}.yaml").read_text()), "he")


def load_model(name: str) -> ModelConfig:
    return from_mapping(ModelConfig, yaml.safe_load((ROOT / "conf" / "model" / f"{name}.yaml").read_text()), "model")


def run_spec(*, parties: int = 2, he: str = "insecure_test", batch: int = 4, model: Optional[ModelConfig] = None,
             split: int = 3, image_size: int = 8, max_groups: Optional[int] = None) -> HERunSpec:
    run = HERunSpec(he=load_he(he), model=model or load_model("relu_cnn"), split_layer=split, image_size=image_size,
                    parties=parties, batch_capacity=batch, max_groups=max_groups)
    # H = 32, the smallest allowed: the tests' few rounds need no more, and their tolerances less error
    return dataclasses.replace(run, he=dataclasses.replace(run.he, mask_hiding_bits=32))


def test_pki(parties: int):
    """The deployment's client PKI plus one certificate from the same CA that nobody registered."""
    return make_client_pki(names=tuple(party_name(j) for j in range(1, parties + 1)) + (EVALUATOR, ORCHESTRATOR, "stranger"))


test_pki.__test__ = False  # not a test


def keyservice_config(**kw) -> KeyServiceConfig:
    # E checks K's attestation at start-up; locally K signs with the development signer, which the
    # local launcher (roles.local_services) accepts for its own K
    base = dict(round_quota=4, max_open_rounds=3, share_wait_s=2.0, startup_timeout_s=300.0)
    base.update(kw)
    return KeyServiceConfig(**base)


def encrypt_values(published, values: np.ndarray) -> tuple:
    """Serialized ciphertexts of (batch, features) under K's public key (a test acting as E)."""
    ev = load_public_material(material=published.material)
    t = encrypt_batch(cc=ev.cc, public_key=ev.public_key, layout=ev.layout, values=values)
    return tuple(serialize_ciphertext(c) for c in t.cts)
