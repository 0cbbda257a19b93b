"""Public material: serialization round trips, and E never holding the secret key."""

from __future__ import annotations

import dataclasses

import numpy as np
import openfhe
import pytest

from he_helpers import dec, load_model, make_run
from ppml_hybrid.he_stage import (
    CKKSTensor, KeyMaterialError, PublicMaterial, deserialize_ciphertext, encrypt_batch, load_public_material,
    serialize_ciphertext,
)
from ppml_hybrid.he_stage.codec import decrypt_batch  # hazmat: the secret key's side, for tests
from ppml_hybrid.he_stage.keys import generate_keys


@pytest.fixture(scope="module")
def run():
    return make_run(model=load_model("relu_cnn"), split=4, image_size=8, batch=4)


def test_public_material_is_bytes_and_round_trips(run):
    ctx = run.secret.context
    sec, pub = generate_keys(context=ctx, layout=run.head.layout, rotation_indices=run.head.rotation_indices)
    for f in ("context", "public_key", "eval_mult_key", "rotation_keys"):
        assert isinstance(getattr(pub, f), bytes)
    assert pub.rotation_indices == run.head.rotation_indices and pub.rotation_keys  # needed ones only
    ev = load_public_material(material=pub)
    assert ev.info.ring_dim == ctx.info.ring_dim
    # the deserialized public key encrypts, the deserialized context evaluates (mult + rotation)
    x = np.arange(12.0).reshape(4, 3) / 10
    t = encrypt_batch(cc=ev.cc, public_key=ev.public_key, layout=ev.layout, values=x)
    sq = CKKSTensor(tuple(ev.cc.EvalMult(c, c) for c in t.cts), 3, ev.layout)
    got = decrypt_batch(cc=sec.context.cc, secret_key=sec.secret_key, tensor=sq, batch=4)
    assert np.abs(got - x * x).max() < 1e-6
    rot = ev.cc.EvalRotate(t.cts[0], pub.rotation_indices[0])
    assert rot is not None
    assert pub.digest() == dataclasses.replace(pub).digest()


def test_ciphertext_round_trip(run):
    ev = run.evaluator
    x = np.linspace(-1, 1, 8).reshape(4, 2)
    t = encrypt_batch(cc=ev.cc, public_key=ev.public_key, layout=ev.layout, values=x)
    data = serialize_ciphertext(t.cts[0])
    assert isinstance(data, bytes)
    back = CKKSTensor((deserialize_ciphertext(data),), 2, ev.layout)
    assert np.abs(dec(run, back) - x).max() < 1e-6
    with pytest.raises(KeyMaterialError):
        deserialize_ciphertext(b"not a ciphertext")


def test_evaluator_holds_no_secret_key(run):
    ev = run.evaluator
    for f in dataclasses.fields(ev):
        assert not isinstance(getattr(ev, f.name), openfhe.PrivateKey), f.name
    pub_fields = {f.name for f in dataclasses.fields(PublicMaterial)}
    assert not any("secret" in n or "private" in n for n in pub_fields)
    # nothing in the public material deserializes as a private key
    _, pub = generate_keys(context=run.secret.context, layout=run.head.layout, rotation_indices=())
    for f in ("public_key", "eval_mult_key", "rotation_keys", "context"):
        data = getattr(pub, f)
        if data:
            with pytest.raises(Exception):
                key = openfhe.DeserializePrivateKeyString(data, openfhe.BINARY)
                assert key is None or not key.GetKeyTag()


def test_corrupt_material_is_a_typed_error(run):
    _, pub = generate_keys(context=run.secret.context, layout=run.head.layout, rotation_indices=())
    with pytest.raises(KeyMaterialError, match="key service"):
        load_public_material(material=dataclasses.replace(pub, context=b"garbage"))


def test_encryption_only_material_encrypts_and_carries_no_evaluation_keys(run):
    from ppml_hybrid.he_stage.keys import encryption_only

    ctx = run.secret.context
    sec, pub = generate_keys(context=ctx, layout=run.head.layout, rotation_indices=run.head.rotation_indices)
    slim = encryption_only(pub)
    assert slim.eval_mult_key == b"" and slim.rotation_keys == b""
    assert slim.context == pub.context and slim.public_key == pub.public_key
    assert len(slim.context) + len(slim.public_key) < len(pub.eval_mult_key) + len(pub.rotation_keys) + len(pub.context)
    ev = load_public_material(material=slim)
    x = np.arange(8.0).reshape(4, 2) / 7
    t = encrypt_batch(cc=ev.cc, public_key=ev.public_key, layout=ev.layout, values=x)
    doubled = CKKSTensor(tuple(ev.cc.EvalAdd(c, c) for c in t.cts), 2, ev.layout)  # additions need no keys
    got = decrypt_batch(cc=sec.context.cc, secret_key=sec.secret_key, tensor=doubled, batch=4)
    assert np.abs(got - 2 * x).max() < 1e-6
