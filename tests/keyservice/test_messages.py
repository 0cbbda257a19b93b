"""Serialization round trips of every protocol message and launch spec; fixed-point sharing."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from ks_helpers import keyservice_config, run_spec, test_pki
from ppml_hybrid.he_stage.errors import KeyMaterialError
from ppml_hybrid.he_stage.evaluator.spec import EvaluatorSpec
from ppml_hybrid.he_stage.runspec import HERunSpec
from ppml_hybrid.he_stage.shares import (
    decode_fixed_point, encode_fixed_point, encode_fixed_point_mod, real_mask, split_additive, sum_shares,
)
from ppml_hybrid.he_stage.material import PublishedMaterial, from_chunks, params_from_pb, params_to_pb, to_chunks
from ppml_hybrid.keyservice.spec import KeyServiceSpec
from ppml_hybrid.roles.local_services import evaluator_registry, key_service_registry
from ppml_hybrid.rpc import common_pb2, keyservice_pb2
from ppml_hybrid.rpc.errors import InvalidArgumentError
from ppml_hybrid.rpc.messages import RoundRef, ShareTensor, float64_from_pb, float64_to_pb


def test_round_ref_round_trip_and_validation():
    r = RoundRef(value_bits=4, round_id=7, kind="delta_pre.4", shape=(16, 64))
    wire = r.to_pb().SerializeToString()
    assert RoundRef.from_pb(common_pb2.RoundRef.FromString(wire)) == r
    for bad in (dict(round_id=-1, kind="x", shape=(1, 1)), dict(round_id=0, kind="", shape=(1, 1)),
                dict(round_id=0, kind="x", shape=(1,)), dict(round_id=0, kind="x", shape=(0, 2)),
                dict(round_id=0, kind="x", shape=(1, 1), value_bits=-1),
                dict(round_id=0, kind="x", shape=(1, 1), value_bits=41)):
        with pytest.raises(InvalidArgumentError):
            RoundRef(**{"value_bits": 4, **bad})


def test_share_tensor_round_trip_and_repr_hides_values():
    r = RoundRef(value_bits=4, round_id=1, kind="logits", shape=(3, 2))
    s = ShareTensor(round=r, share=np.array([[1, -2], [2 ** 62, -(2 ** 63)], [0, 5]], dtype=np.int64))
    back = ShareTensor.from_pb(common_pb2.ShareTensor.FromString(s.to_pb().SerializeToString()))
    assert back.round == r and np.array_equal(back.share, s.share)
    assert "62" not in repr(s) and "int64 (3, 2)" in repr(s)
    with pytest.raises(InvalidArgumentError):
        ShareTensor(round=r, share=np.zeros((2, 2), dtype=np.int64))


def test_float64_tensor_round_trip():
    w = np.random.default_rng(0).normal(size=(4, 3))
    name, back = float64_from_pb(common_pb2.Float64Tensor.FromString(float64_to_pb(name="w", value=w).SerializeToString()))
    assert name == "w" and np.array_equal(back, w)


def test_public_material_round_trips_in_chunks(published):
    chunks = list(to_chunks(published, chunk_bytes=100_000))
    assert len(chunks) > 5  # really chunked
    wire = [keyservice_pb2.PublicMaterialChunk.FromString(c.SerializeToString()) for c in chunks]
    back = from_chunks(wire)
    assert back == published
    assert params_from_pb(params_to_pb(published.material.params)) == published.material.params
    tampered = list(wire)
    tampered[-1] = keyservice_pb2.PublicMaterialChunk(blob=keyservice_pb2.BlobChunk(
        field=wire[-1].blob.field, data=bytes(len(wire[-1].blob.data))))
    with pytest.raises(KeyMaterialError, match="digest mismatch"):
        from_chunks(tampered)
    with pytest.raises(KeyMaterialError, match="incomplete"):
        from_chunks(wire[:-1])


def test_launch_specs_round_trip_through_json():
    pki = test_pki(3)
    run = run_spec(parties=3, max_groups=1)
    assert HERunSpec.from_json(json.loads(json.dumps(run.to_json()))) == run
    ks = KeyServiceSpec(run=run, keyservice=keyservice_config(), client_ca_pem=pki.ca.cert_pem,
                        registry=key_service_registry(pki=pki, parties=3), wire_log="/tmp/x")
    assert KeyServiceSpec.from_json(json.loads(json.dumps(ks.to_json()))) == ks
    es = EvaluatorSpec(run=run, key_address="127.0.0.1:1", key_trust_pem=b"pem", key_credential=pki.clients["evaluator"],
                       client_ca_pem=pki.ca.cert_pem, registry=evaluator_registry(pki=pki, parties=3))
    assert EvaluatorSpec.from_json(json.loads(json.dumps(es.to_json()))) == es
    assert "key_pem" not in repr(pki.clients["evaluator"])


def test_fixed_point_sharing_wraps_mod_2_64():
    x = np.array([[1.5, -2.25, 1e-5, 123.456]])
    enc = encode_fixed_point(values=x)
    for n in (2, 3):
        shares = split_additive(encoded=enc, parties=n)
        assert np.array_equal(sum_shares(*shares), enc)
    assert np.abs(decode_fixed_point(encoded=enc) - x).max() <= 2 ** -17
    r = real_mask(bits=40, shape=(10_000,))
    assert r.min() >= -(2 ** 40) and r.max() < 2 ** 40 and r.max() > 2 ** 39  # uniform over [-2^40, 2^40)
    # Not on the 2^-16 grid: at 2^20 (doubles resolve 2^-32 there) the fraction below the grid is uniform
    frac = np.mod(real_mask(bits=20, shape=(10_000,)) * 2 ** 16, 1.0)
    assert 0.47 < frac.mean() < 0.53 and np.mean(frac == 0) < 0.01


def test_fixed_point_encoding_mod_2_64_is_exact_for_wide_values():
    x = np.array([0.0, 1.5, -2.25, 2.0 ** 46 + 0.5, -(2.0 ** 50) - 3.0, 2.0 ** 55, 1234.56789])
    got = encode_fixed_point_mod(values=x).view(np.uint64)
    want = [int(round(v * 2 ** 16)) % 2 ** 64 for v in x]
    assert [int(g) for g in got] == want
    # shares of v + R and of -R sum to v's encoding mod 2^64 whatever the width of R
    # (up to the rounding of v + R to a double: 2^(B - 53) in value, 2^3 units of 2^-16 at B = 40)
    v, r = np.array([0.123, -4.5, 7.77]), np.array([2.0 ** 40 - 17.25, -(2.0 ** 39) + 0.1, 3.0])
    total = sum_shares(encode_fixed_point_mod(values=v + r), encode_fixed_point_mod(values=-r))
    assert np.abs(total - encode_fixed_point(values=v)).max() <= 1 + 2 ** 3


def test_spare_level_holds_the_widest_mask():
    from ppml_hybrid.he_stage.runspec import run_params
    run = run_spec()
    assert run_params(spec=run).depth_plan.spare_levels == 1  # |v + R| < 2^57 at scale 2^50: one level


