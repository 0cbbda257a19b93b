"""Verifier: the good document, and every refusal (one opaque error, reason at debug only)."""

from __future__ import annotations

import datetime
import logging
import os

import pytest

from ppml_hybrid.keyservice.attestation import DevelopmentSigner
from ppml_hybrid.keyservice.attestation.devsigner import development_pcrs
from ppml_hybrid.rpc.attestation import (
    AttestationError, AttestationPolicy, DecryptionPolicy, KeyBinding, cose, verify_key_service,
)
from ppml_hybrid.rpc.attestation.document import AttestationPayload
from ppml_hybrid.rpc.attestation.verifier import utc_now

NOW = datetime.datetime(2026, 6, 1, 12, 0, tzinfo=datetime.timezone.utc)
CHANNEL = b"ppml-hybrid tls-trust sha384:" + bytes(range(48))
BINDING = KeyBinding(context_sha384=b"c" * 48, public_key_sha384=b"p" * 48, eval_keys_sha384=b"e" * 48,
                     policy_sha384=b"o" * 48)


def at(t):
    return lambda: t


@pytest.fixture(scope="module")
def signer():
    return DevelopmentSigner(clock=at(NOW))


def policy(signer, **kw):
    base = dict(expected_pcrs={i: signer.pcrs[i] for i in (0, 1, 2)}, allow_development=True,
                development_root_pem=signer.root_pem, clock=at(NOW + datetime.timedelta(seconds=5)))
    base.update(kw)
    return AttestationPolicy(**base)


def make(signer, nonce, *, binding=BINDING, channel=CHANNEL):
    return signer.attest(user_data=binding.to_user_data(), nonce=nonce, public_key=channel)


def verify(doc, pol, nonce, *, binding=BINDING, channel=CHANNEL):
    return verify_key_service(document=doc, policy=pol, nonce=nonce, binding=binding, public_key=channel)


def test_good_document_verifies(signer):
    nonce = os.urandom(32)
    payload = verify(make(signer, nonce), policy(signer), nonce)
    assert payload.development and payload.digest == "SHA384" and payload.nonce == nonce
    assert KeyBinding.from_user_data(payload.user_data) == BINDING


def test_wrong_nonce(signer):
    with pytest.raises(AttestationError):
        verify(make(signer, os.urandom(32)), policy(signer), os.urandom(32))


def test_wrong_pcr(signer):
    nonce = os.urandom(32)
    bad = dict(policy(signer).expected_pcrs)
    bad[0] = bytes(48 * [0xAB])
    with pytest.raises(AttestationError):
        verify(make(signer, nonce), policy(signer, expected_pcrs=bad), nonce)


def test_required_pcr_missing_from_document(signer):
    nonce = os.urandom(32)
    with pytest.raises(AttestationError):
        verify(make(signer, nonce), policy(signer, expected_pcrs={20: bytes(48)}), nonce)


def test_wrong_root(signer):
    other = DevelopmentSigner(clock=at(NOW))
    nonce = os.urandom(32)
    with pytest.raises(AttestationError):
        verify(make(signer, nonce), policy(signer, development_root_pem=other.root_pem), nonce)


def test_chain_not_anchored_at_aws_root_without_dev_opt_in(signer):
    nonce = os.urandom(32)
    with pytest.raises(AttestationError):
        verify(make(signer, nonce), policy(signer, allow_development=False), nonce)


def test_expired_leaf_certificate_with_injected_clock(signer):
    nonce = os.urandom(32)
    late = NOW + datetime.timedelta(hours=4)  # leaf lives 3 h
    signer_late = DevelopmentSigner(clock=at(NOW))
    doc = signer_late.attest(user_data=BINDING.to_user_data(), nonce=nonce, public_key=CHANNEL)
    with pytest.raises(AttestationError):
        verify(doc, policy(signer_late, clock=at(late), max_age_s=10 ** 6), nonce)


def test_certificate_not_yet_valid(signer):
    nonce = os.urandom(32)
    with pytest.raises(AttestationError):
        verify(make(signer, nonce), policy(signer, clock=at(NOW - datetime.timedelta(days=1)), max_age_s=10 ** 6),
               nonce)


def test_stale_document(signer):
    nonce = os.urandom(32)
    with pytest.raises(AttestationError):
        verify(make(signer, nonce), policy(signer, clock=at(NOW + datetime.timedelta(minutes=10))), nonce)


@pytest.mark.parametrize("where", ["payload", "signature", "protected", "raw"])
def test_one_flipped_bit(signer, where):
    nonce = os.urandom(32)
    doc = make(signer, nonce)
    msg = cose.decode(doc)
    if where == "raw":
        flipped = bytearray(doc)
        flipped[len(doc) // 2] ^= 0x01
        bad = bytes(flipped)
    else:
        field = bytearray(getattr(msg, where))
        field[len(field) // 3] ^= 0x10
        parts = dict(protected=msg.protected, payload=msg.payload, signature=msg.signature)
        parts[where] = bytes(field)
        bad = cose.CoseSign1(**parts).encode()
    with pytest.raises(AttestationError):
        verify(bad, policy(signer), nonce)


def test_every_single_bit_flip_in_the_signature_region_is_refused(signer):
    nonce = os.urandom(32)
    doc = make(signer, nonce)
    for i in range(len(doc) - 96, len(doc), 7):
        bad = bytearray(doc)
        bad[i] ^= 0x80
        with pytest.raises(AttestationError):
            verify(bytes(bad), policy(signer), nonce)


def test_development_document_refused_without_opt_in(signer):
    nonce = os.urandom(32)
    with pytest.raises(AttestationError):
        verify(make(signer, nonce), policy(signer, allow_development=False, development_root_pem=signer.root_pem),
               nonce)


def test_debug_pcrs_refused_unless_allowed():
    zero = {i: bytes(48) for i in range(16)}
    dbg = DevelopmentSigner(pcrs=zero, clock=at(NOW))
    nonce = os.urandom(32)
    doc = dbg.attest(user_data=BINDING.to_user_data(), nonce=nonce, public_key=CHANNEL)
    with pytest.raises(AttestationError):
        verify(doc, policy(dbg, expected_pcrs={}), nonce)
    assert verify(doc, policy(dbg, expected_pcrs={}, allow_debug=True), nonce).nonce == nonce


@pytest.mark.parametrize("field", ["context_sha384", "public_key_sha384", "eval_keys_sha384", "policy_sha384"])
def test_received_material_hash_mismatch(signer, field):
    nonce = os.urandom(32)
    received = KeyBinding(**{**BINDING.__dict__, field: b"x" * 48})
    with pytest.raises(AttestationError):
        verify(make(signer, nonce), policy(signer), nonce, binding=received)


def test_channel_binding_mismatch(signer):
    nonce = os.urandom(32)
    with pytest.raises(AttestationError):
        verify(make(signer, nonce), policy(signer), nonce, channel=CHANNEL[:-1] + b"\x00")


def test_decryption_policy_is_canonical():
    a = DecryptionPolicy(parties=2, hiding_bits=34, max_mask_bits=56, round_quota=4, max_open_rounds=8)
    b = DecryptionPolicy(parties=2, hiding_bits=34, max_mask_bits=56, round_quota=4, max_open_rounds=8)
    assert a.canonical() == b.canonical()
    assert a.canonical() != DecryptionPolicy(parties=3, hiding_bits=34, max_mask_bits=56, round_quota=4,
                                             max_open_rounds=8).canonical()


def test_error_is_opaque_and_reason_only_at_debug(signer, caplog):
    nonce = os.urandom(32)
    errors = []
    with caplog.at_level(logging.DEBUG, logger="ppml_hybrid.rpc.attestation"):
        for doc, n in ((make(signer, nonce), os.urandom(32)), (b"garbage", nonce)):
            with pytest.raises(AttestationError) as exc:
                verify(doc, policy(signer), n)
            errors.append(str(exc.value))
    assert errors[0] == errors[1] == "attestation document rejected"
    reasons = [r for r in caplog.records if "attestation rejected" in r.getMessage()]
    assert reasons and all(r.levelno == logging.DEBUG for r in reasons)


def test_payload_roundtrip_keeps_nitro_fields(signer):
    doc = make(signer, b"n" * 16)
    p = AttestationPayload.decode(cose.decode(doc).payload)
    assert set(p.pcrs) == set(range(16)) and len(p.cabundle) == 2
    assert p.module_id.startswith("DEVELOPMENT-") and p.public_key == CHANNEL


def test_development_pcr0_measures_package_sources():
    assert development_pcrs()[0] == development_pcrs()[0] and len(development_pcrs()[0]) == 48
    assert utc_now().tzinfo is not None
