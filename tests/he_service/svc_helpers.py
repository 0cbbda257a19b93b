"""Drive one HE step through K and E as the orchestrator and the parties would."""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, Dict

import numpy as np
import torch

from he_helpers import reference
from ks_helpers import TOL_UNITS  # noqa: F401
from ppml_hybrid.he_stage.codec import encrypt_batch
from ppml_hybrid.he_stage.keys import load_public_material, serialize_ciphertext
from ppml_hybrid.he_stage.runspec import run_head
from ppml_hybrid.he_stage.shares import conversion_error_bound, encode_fixed_point, sum_shares
from ppml_hybrid.model import build_model
from ppml_hybrid.rpc.messages import RoundRef

VALUE_BITS = 4  # the test model's values stay below 2^4 (checked per tensor)


@dataclass
class Step:
    ref: Dict[str, Any]
    state: Dict[str, Any]
    head: Any
    evaluator_keys: Any


def prepare_step(svc, run, *, seed: int = 1) -> Step:
    """Public weights, split activations and delta_z, and the float64 reference of every HE output."""
    published = svc.party_key_client(1).get_public_material()
    keys = load_public_material(material=published.material)
    head = run_head(spec=run, layout=keys.layout)
    tm = build_model(run.model, image_size=run.image_size, seed=0).double()
    with torch.no_grad():
        for i, blk in enumerate(tm.blocks):
            if hasattr(blk["act"], "a"):
                blk["act"].a.fill_(0.05 + 0.03 * i)
                blk["act"].b.fill_(0.8 + 0.05 * i)
    ns = types.SimpleNamespace(torch_model=tm, split=run.split_layer, head=head, batch=run.batch_capacity)
    ref = reference(ns, seed)
    state = {k: v for k, v in tm.state_dict().items()
             if int(k.split(".")[1]) >= run.split_layer}  # the HE blocks' public weights only
    return Step(ref=ref, state=state, head=head, evaluator_keys=keys)


def encrypt(step: Step, values: np.ndarray) -> tuple:
    ev = step.evaluator_keys
    t = encrypt_batch(cc=ev.cc, public_key=ev.public_key, layout=ev.layout, values=values)
    return tuple(serialize_ciphertext(c) for c in t.cts)


def expected(step: Step, name: str) -> np.ndarray:
    r = step.ref
    if name in ("logits", "delta_input"):
        return r[name]
    kind, j = name.split(".")
    return r[{"pre": "pre", "act": "act", "delta_pre": "delta_pre", "delta_post": "delta_post"}[kind]][int(j)]


def convert(svc, driver, parties, *, step_id: int, round_id: int, name: str, batch: int, n_features: int):
    """All parties announce, E masks and submits, every party receives; returns the parties' shares."""
    rnd = RoundRef(value_bits=VALUE_BITS, round_id=round_id, kind=name, shape=(batch, n_features))
    for p in parties:
        p.announce(round=rnd)
    driver.mask_and_share(step_id=step_id, name=name, round=rnd)
    return [p.receive(round=rnd) for p in parties]


def check_reconstruction(shares, want: np.ndarray, what: str, *, mask_bits: int = VALUE_BITS + 32) -> None:
    """The parties' shares sum to the model's value within the conversion's error bound (mask 2^(V+H))."""
    got = sum_shares(*shares)
    err = np.abs(got - encode_fixed_point(values=want)).max()
    tol = conversion_error_bound(mask_bits=mask_bits) * 2 ** 16
    assert np.abs(want).max() < 2 ** VALUE_BITS, f"{what}: test values exceed the announced bound"
    assert err <= tol, f"{what}: parties' shares are {err} units of 2^-16 off (allowed {tol:.1f})"
