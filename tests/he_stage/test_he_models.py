"""Whole HE heads of the configured models, end to end: encrypt, forward, backward, decrypt."""

from __future__ import annotations

import pytest

from he_helpers import check_all, load_he, load_model, make_run


@pytest.mark.parametrize("split", [3, 4])
def test_relu_cnn(split):
    check_all(make_run(model=load_model("relu_cnn"), split=split, image_size=32, batch=4))


@pytest.mark.parametrize("split", [2, 3, 4])
def test_poly_cnn(split):
    check_all(make_run(model=load_model("poly_cnn"), split=split, image_size=8, batch=4))


@pytest.mark.slow
def test_poly_cnn_split1_samples_in_slots():
    check_all(make_run(model=load_model("poly_cnn"), split=1, image_size=8, batch=4, max_groups=1))


def test_default_128bit_params():
    """HEStd_128_classic with the default model's derived depth (ring 2^14), small shapes."""
    run = make_run(model=load_model("relu_cnn"), split=3, image_size=8, batch=4, he=load_he("ckks_128"),
                   max_groups=16)
    info = run.evaluator.info
    assert (info.ring_dim, info.multiplicative_depth, info.security_level) == (16384, 5, "HEStd_128_classic")
    assert not info.insecure
    check_all(run)


def test_encoder_threads_leave_every_ciphertext_bit_identical():
    """E's encoder threads (he.encoder_threads) only move the weight encodings onto other
    threads, a window ahead: the same operations in the same order, so the same ciphertexts."""
    from concurrent.futures import ThreadPoolExecutor

    from he_helpers import reference
    from ppml_hybrid.he_stage import encrypt_batch
    from ppml_hybrid.he_stage.keys import serialize_ciphertext
    from ppml_hybrid.he_stage.linear import ENCODE_AHEAD

    run = make_run(model=load_model("relu_cnn"), split=3, image_size=32, batch=4)
    ev, ref = run.evaluator, reference(run)
    w = run.head.load_weights(state_dict=run.torch_model.state_dict())
    a, dz = (encrypt_batch(cc=ev.cc, public_key=ev.public_key, layout=ev.layout, values=ref[k]) for k in ("a", "dz"))
    assert sum(len(p.terms[0].keys) for p in w.plans.values()) > 2 * ENCODE_AHEAD  # the window slides

    def everything(encoder):
        fwd = run.head.forward(cc=ev.cc, weights=w, inputs=a, encoder=encoder)
        bwd = run.head.backward(cc=ev.cc, weights=w, forward=fwd, delta_logits=dz, encoder=encoder)
        tensors = [fwd.logits, bwd.delta_input, *fwd.pre_activations.values(), *fwd.activations.values(),
                   *bwd.delta_pre_activations.values(), *bwd.delta_post_activations.values()]
        return [serialize_ciphertext(ct) for t in tensors for ct in t.cts]

    inline = everything(None)
    with ThreadPoolExecutor(max_workers=2) as pool:
        ahead = everything(pool)
    assert len(inline) == len(ahead) > 4 and inline == ahead
    check_all(run)  # and the values themselves against autograd
