"""Shared helpers of the HE-stage tests: build a run, encrypt, compare with PyTorch."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional

import numpy as np
import torch
import yaml

from ppml_hybrid.config import BlockConfig, HEConfig, ModelConfig, PolyConfig, from_mapping
from ppml_hybrid.he_stage import HEHead, build_context, choose_layout, derive_params, encrypt_batch, load_public_material
from ppml_hybrid.he_stage.codec import decrypt_batch  # hazmat: the secret key's side, for tests
from ppml_hybrid.he_stage.keys import generate_keys
from ppml_hybrid.model import build_model

ROOT = Path(__file__).resolve().parents[2]
# |HE - torch| <= TOL * max(1, max |torch|): CKKS at scale 2^50 gives ~1e-11 here; 1e-6 leaves room.
TOL = 1e-6


def load_model(name: str) -> ModelConfig:
    return from_mapping(ModelConfig, yaml.safe_load((ROOT / "conf" / "model" / f"{name}.yaml").read_text()), "model")


def load_he(name: str) -> HEConfig:
    return from_mapping(HEConfig, yaml.safe_load((ROOT / "conf" / "he" / f"{name}.yaml").read_text()), "he")


def small_model(*blocks: BlockConfig, in_channels: int = 2) -> ModelConfig:
    return ModelConfig(name="t", blocks=tuple(blocks), in_channels=in_channels, num_classes=blocks[-1].out,
                       poly=PolyConfig(a=0.1, b=0.9, trainable=True))


@dataclass
class Run:
    model: ModelConfig
    split: int
    head: HEHead
    secret: Any
    evaluator: Any
    torch_model: Any
    batch: int


def make_run(*, model: ModelConfig, split: int, image_size: int, batch: int, he: Optional[HEConfig] = None,
             max_groups: Optional[int] = None, params_model: Optional[ModelConfig] = None,
             params_split: Optional[int] = None) -> Run:
    he = he or load_he("insecure_test")
    params = derive_params(he=he, model=params_model or model, split_layer=params_split or split, parties=2)
    ctx = build_context(params=params)
    layout = choose_layout(slots=ctx.info.slots, batch_capacity=batch, max_groups=max_groups)
    head = HEHead(model=model, split_layer=split, image_size=image_size, layout=layout)
    secret, public = generate_keys(context=ctx, layout=layout, rotation_indices=head.rotation_indices)
    evaluator = load_public_material(material=public)
    tm = build_model(model, image_size=image_size, seed=0).double()
    with torch.no_grad():  # non-trivial, distinct poly coefficients per block
        for i, blk in enumerate(tm.blocks):
            if hasattr(blk["act"], "a"):
                blk["act"].a.fill_(0.05 + 0.03 * i)
                blk["act"].b.fill_(0.8 + 0.05 * i)
    return Run(model, split, head, secret, evaluator, tm, batch)


def reference(run: Run, seed: int = 1) -> Dict[str, Any]:
    """Split activations, delta_z and every intermediate the HE head returns, from autograd."""
    g = torch.Generator().manual_seed(seed)
    tm, s = run.torch_model, run.split
    shape = run.head.blocks[0].in_shape
    a = torch.randn((run.batch,) + shape, generator=g, dtype=torch.float64)
    a = (a / a.abs().max()).requires_grad_(True)
    pre, post, out = {}, {}, {}
    x = a
    for blk in run.head.blocks:
        layers = tm.blocks[blk.index - 1]
        h = layers["flatten"](x) if "flatten" in layers else x
        h = layers["conv"](h) if "conv" in layers else layers["linear"](h)
        h.retain_grad()
        pre[blk.index] = h
        p = layers["act"](h)
        p.retain_grad()
        post[blk.index] = p
        x = layers["pool"](p) if "pool" in layers else p
        out[blk.index] = x
    z = x
    dz = torch.randn(z.shape, generator=g, dtype=torch.float64) * 0.5
    z.backward(dz)
    flat = lambda t: t.detach().reshape(run.batch, -1).numpy()
    hidden = [b.index for b in run.head.blocks[:-1]]
    return {
        "a": flat(a), "dz": flat(dz), "logits": flat(z), "delta_input": flat(a.grad),
        "pre": {j: flat(pre[j]) for j in hidden}, "act": {j: flat(out[j]) for j in hidden},
        "delta_pre": {j: flat(pre[j].grad) for j in hidden},
        "delta_post": {j: flat(post[j].grad) for j in hidden if run.head.blocks[j - run.split - 1].activation == "poly"},
    }


def run_he(run: Run, ref: Dict[str, Any]):
    ev = run.evaluator
    w = run.head.load_weights(state_dict=run.torch_model.state_dict())
    enc = lambda v: encrypt_batch(cc=ev.cc, public_key=ev.public_key, layout=ev.layout, values=v)
    fwd = run.head.forward(cc=ev.cc, weights=w, inputs=enc(ref["a"]))
    bwd = run.head.backward(cc=ev.cc, weights=w, forward=fwd, delta_logits=enc(ref["dz"]))
    return fwd, bwd


def dec(run: Run, tensor) -> np.ndarray:
    return decrypt_batch(cc=run.secret.context.cc, secret_key=run.secret.secret_key, tensor=tensor, batch=run.batch)


def assert_close(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    bound = TOL * max(1.0, float(np.abs(want).max()))
    err = float(np.abs(got - want).max())
    assert err <= bound, f"{what}: max error {err:.3g} > {bound:.3g}"


def check_all(run: Run, seed: int = 1) -> None:
    """HE forward and backward against autograd: every returned tensor."""
    ref = reference(run, seed)
    fwd, bwd = run_he(run, ref)
    assert_close(dec(run, fwd.logits), ref["logits"], "logits")
    assert_close(dec(run, bwd.delta_input), ref["delta_input"], "delta at the split")
    assert set(fwd.pre_activations) == set(ref["pre"]) and set(bwd.delta_post_activations) == set(ref["delta_post"])
    for j in ref["pre"]:
        assert_close(dec(run, fwd.pre_activations[j]), ref["pre"][j], f"pre-activation of block {j}")
        assert_close(dec(run, fwd.activations[j]), ref["act"][j], f"output of block {j}")
        assert_close(dec(run, bwd.delta_pre_activations[j]), ref["delta_pre"][j], f"delta_x of block {j}")
    for j in ref["delta_post"]:
        assert_close(dec(run, bwd.delta_post_activations[j]), ref["delta_post"][j], f"delta_h of block {j}")
