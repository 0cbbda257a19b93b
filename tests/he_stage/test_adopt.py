"""adopt_all: received ciphertexts re-attached to this process's context, bit for bit unchanged."""

from __future__ import annotations

import numpy as np

from he_helpers import load_he, load_model, make_run
from ppml_hybrid.he_stage.adopt import adopt_all, adopt_groups
from ppml_hybrid.he_stage.keys import deserialize_ciphertext, serialize_ciphertext


def test_adopted_ciphertexts_are_the_received_ones_bit_for_bit():
    run = make_run(model=load_model("relu_cnn"), split=3, image_size=8, batch=4, he=load_he("insecure_test"))
    ev = run.evaluator
    cc, pk = ev.cc, ev.public_key
    slots = cc.GetRingDimension() // 2
    v = np.linspace(-1, 1, slots)
    fresh = cc.Encrypt(pk, cc.MakeCKKSPackedPlaintext(v))
    product = cc.EvalMult(fresh, cc.MakeCKKSPackedPlaintext(v, 1, 0))  # noise-scale degree 2, un-rescaled
    deeper = cc.Encrypt(pk, cc.MakeCKKSPackedPlaintext(v, 1, 2))  # two levels down
    assert product.GetNoiseScaleDeg() == 2 and deeper.GetLevel() == 2
    sent = [serialize_ciphertext(c) for c in (fresh, product, deeper, fresh)]
    received = [deserialize_ciphertext(b) for b in sent]
    adopted = adopt_all(cc=cc, public_key=pk, cts=received)
    assert [serialize_ciphertext(c) for c in adopted] == sent
    assert all(a is not r for a, r in zip(adopted, received))  # re-attached, not passed through
    grouped = adopt_groups(cc=cc, public_key=pk, groups=[received[:1], [], received[1:]])
    assert [[serialize_ciphertext(c) for c in g] for g in grouped] == [sent[:1], [], sent[1:]]
