"""The SS->HE output is a CKKSTensor the HE head accepts: 3 parties (deepest chain), packed
layout with rotations, parameters from ``derive_params`` (which counts the chain's levels)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import torch

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS / "he_stage") not in sys.path:
    sys.path.append(str(TESTS / "he_stage"))

from conv_helpers import smpc  # noqa: E402
from he_helpers import dec, load_he, reference, small_model  # noqa: E402
from ppml_hybrid.config import BlockConfig  # noqa: E402
from ppml_hybrid.he_stage import HEHead, build_context, choose_layout, derive_params  # noqa: E402
from ppml_hybrid.he_stage.keys import generate_keys  # noqa: E402
from ppml_hybrid.he_stage.keys import load_public_material  # noqa: E402
from ppml_hybrid.model import build_model  # noqa: E402
from ppml_hybrid.protocols import ConversionParams  # noqa: E402
from ppml_hybrid.protocols.programs import SSToHEProgram  # noqa: E402
from ppml_hybrid.protocols.ss_to_he import combine  # noqa: E402
from ppml_hybrid.smpc_stage.launcher import run_parties  # noqa: E402

BATCH, PARTIES = 4, 3


def test_head_forward_on_converted_activations():
    model = small_model(BlockConfig(type="conv", out=2, activation="relu", pool="none"),
                        BlockConfig(type="dense", out=7, activation="poly"), BlockConfig(type="dense", out=3))
    params = derive_params(he=load_he("insecure_test"), model=model, split_layer=1, parties=PARTIES)
    ctx = build_context(params=params)
    layout = choose_layout(slots=ctx.info.slots, batch_capacity=BATCH)
    head = HEHead(model=model, split_layer=1, image_size=4, layout=layout)
    secret, public = generate_keys(context=ctx, layout=layout, rotation_indices=head.rotation_indices)
    tm = build_model(model, image_size=4, seed=0).double()
    run = types.SimpleNamespace(torch_model=tm, split=1, head=head, batch=BATCH, secret=secret)
    ref = reference(run, seed=3)

    p = ConversionParams(parties=PARTIES, scale_bits=params.scale_bits)
    a = torch.from_numpy(ref["a"]).float()
    out = run_parties(smpc=smpc(PARTIES), program=SSToHEProgram(material=public, params=p),
                      party_inputs=[a] + [None] * (PARTIES - 1)).results
    ev = load_public_material(material=public)
    enc_a = combine(cc=ev.cc, public_key=ev.public_key, layout=ev.layout, shares=[r.contribution.share for r in out],
                    chain=out[-1].contribution.chain, params=p, shape=tuple(ref["a"].shape))
    fwd = head.forward(cc=ev.cc, weights=head.load_weights(state_dict=tm.state_dict()), inputs=enc_a)
    got = dec(run, fwd.logits)
    # the input went through CrypTen's 16-bit fixed point: |da| <= 2^-16, amplified by the layers
    assert np.abs(got - ref["logits"]).max() <= 1e-3 * max(1.0, float(np.abs(ref["logits"]).max()))
