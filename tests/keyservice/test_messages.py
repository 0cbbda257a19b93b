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
from ppml_hybrid.he_stage.shares import decode_fixed_point, encode_fixed_point, split_additive, sum_shares, uniform_mask_int
from ppml_hybrid.keyservice.material import PublishedMaterial, from_chunks, params_from_pb, params_to_pb, to_chunks
from ppml_hybrid.keyservice.spec import KeyServiceSpec
from ppml_hybrid.rpc import common_pb2, keyservice_pb2
from ppml_hybrid.rpc.errors import InvalidArgumentError
from ppml_hybrid.rpc.local import evaluator_registry, key_service_registry
from ppml_hybrid.rpc.messages import RoundRef, ShareTensor, float64_from_pb, float64_to_pb


def test_round_ref_round_trip_and_validation():
    r = RoundRef(round_id=7, kind="delta_pre.4", shape=(16, 64))
    wire = r.to_pb().SerializeToString()
    assert RoundRef.from_pb(common_pb2.RoundRef.FromString(wire)) == r
    for bad in (dict(round_id=-1, kind="x", shape=(1, 1)), dict(round_id=0, kind="", shape=(1, 1)),
                dict(round_id=0, kind="x", shape=(1,)), dict(round_id=0, kind="x", shape=(0, 2))):
        with pytest.raises(InvalidArgumentError):
            RoundRef(**bad)


def test_share_tensor_round_trip_and_repr_hides_values():
    r = RoundRef(round_id=1, kind="logits", shape=(3, 2))
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
    r = uniform_mask_int(bits=30, shape=(10_000,))
    assert r.min() >= -(2 ** 46) and r.max() < 2 ** 46 and r.max() > 2 ** 45  # uniform over [-2^46, 2^46)


def test_mask_size_must_hide_the_values():
    from ppml_hybrid.he_stage.errors import HEParamsError
    from ppml_hybrid.he_stage.runspec import run_params
    run = run_spec()
    with pytest.raises(HEParamsError, match="mask_bits must exceed"):
        run_params(spec=dataclasses.replace(run, he=dataclasses.replace(run.he, mask_bits=8)))
    assert run_params(spec=run).depth_plan.spare_levels == 1  # room for |v + R| < 2^39 at scale 2^50
