"""The attestation verifier against genuine AWS Nitro documents (tests/enclave/vectors/README.md).

Trust hole closed here: with no PCR pinned (the shipped enclave policy had ``expected_pcrs: []``),
a genuine non-debug document from an unrelated AWS account was accepted. Now a document that
is not from the development signer is refused unless the policy pins PCR0, PCR1 and PCR2.
"""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from ppml_hybrid.rpc.attestation import cose
from ppml_hybrid.rpc.attestation.document import AttestationPayload
from ppml_hybrid.rpc.attestation.errors import AttestationError
from ppml_hybrid.rpc.attestation.verifier import AttestationPolicy, verify_document

VECTORS = Path(__file__).parent / "vectors"


def _load(name: str):
    doc = (VECTORS / name).read_bytes()
    payload = AttestationPayload.decode(cose.decode(doc).payload)
    at = datetime.datetime.fromtimestamp(payload.timestamp_ms / 1000, tz=datetime.timezone.utc)
    return doc, payload, (lambda: at + datetime.timedelta(seconds=30))


def _policy(payload, clock, pins=(0, 1, 2), **kw) -> AttestationPolicy:
    return AttestationPolicy(expected_pcrs={i: payload.pcrs[i] for i in pins}, clock=clock, **kw)


def test_a_genuine_document_is_accepted_against_its_pinned_pcrs():
    doc, payload, clock = _load("nitro_doc.cbor")
    got = verify_document(document=doc, policy=_policy(payload, clock), nonce=payload.nonce)
    assert got.module_id == payload.module_id and not got.development


@pytest.mark.parametrize("pins", [(), (0,), (0, 1), (1, 2)], ids=["none", "pcr0", "pcr01", "pcr12"])
def test_a_genuine_document_of_an_unrelated_account_is_refused_without_pinned_pcrs(pins):
    """The trust hole: before the fix, ``pins=()`` accepted this stranger's enclave."""
    doc, payload, clock = _load("nitro_doc.cbor")
    with pytest.raises(AttestationError):
        verify_document(document=doc, policy=_policy(payload, clock, pins=pins), nonce=payload.nonce)


def test_a_wrong_pcr0_a_flipped_signature_bit_or_a_late_clock_is_refused():
    doc, payload, clock = _load("nitro_doc.cbor")
    wrong = dict(_policy(payload, clock).expected_pcrs)
    wrong[0] = bytes(48)
    with pytest.raises(AttestationError):
        verify_document(document=doc, policy=AttestationPolicy(expected_pcrs=wrong, clock=clock), nonce=payload.nonce)
    flipped = bytearray(doc)
    flipped[-10] ^= 1  # inside the signature (the last field of the COSE_Sign1 array)
    with pytest.raises(AttestationError):
        verify_document(document=bytes(flipped), policy=_policy(payload, clock), nonce=payload.nonce)
    late = lambda: clock() + datetime.timedelta(hours=4)  # noqa: E731 - the leaf certificate has expired
    with pytest.raises(AttestationError):
        verify_document(document=doc, policy=_policy(payload, late, max_age_s=10 ** 6), nonce=payload.nonce)


def test_the_genuine_debug_document_is_refused_unless_debug_is_allowed_and_its_zero_pcrs_pinned():
    doc, payload, clock = _load("nitro_debug_doc.cbor")
    with pytest.raises(AttestationError):
        verify_document(document=doc, policy=_policy(payload, clock), nonce=payload.nonce)
    with pytest.raises(AttestationError):  # debug allowed, but nothing pinned
        verify_document(document=doc, policy=_policy(payload, clock, pins=(), allow_debug=True), nonce=payload.nonce)
    got = verify_document(document=doc, policy=_policy(payload, clock, allow_debug=True), nonce=payload.nonce)
    assert got.module_id == payload.module_id


def test_the_genuine_document_under_cbor_tag_18_is_accepted():
    """RFC 9052 allows the COSE_Sign1 tag; the signature covers the Sig_structure, not the tag."""
    import cbor2

    doc, payload, clock = _load("nitro_doc.cbor")
    tagged = cbor2.dumps(cbor2.CBORTag(18, cbor2.loads(doc)))
    assert tagged != doc
    got = verify_document(document=tagged, policy=_policy(payload, clock), nonce=payload.nonce)
    assert got.module_id == payload.module_id


def test_a_genuine_document_claiming_another_algorithm_is_refused():
    import cbor2

    doc, payload, clock = _load("nitro_doc.cbor")
    arr = cbor2.loads(doc)
    arr[0] = cbor2.dumps({1: -7})  # ES256 in the protected header
    with pytest.raises(AttestationError):
        verify_document(document=cbor2.dumps(arr), policy=_policy(payload, clock), nonce=payload.nonce)


@pytest.mark.parametrize("case", ["no_cabundle", "empty_cabundle", "no_nonce", "sha256_digest", "short_pcr",
                                  "no_pcrs", "no_timestamp", "string_timestamp"])
def test_malformed_payloads_of_the_genuine_document_are_refused(case):
    """Each change made to the real payload (the signature no longer matters: parsing refuses first)."""
    import cbor2

    doc, payload, clock = _load("nitro_doc.cbor")
    arr = cbor2.loads(doc)
    m = cbor2.loads(arr[2])
    if case == "no_cabundle":
        del m["cabundle"]
    elif case == "empty_cabundle":
        m["cabundle"] = []
    elif case == "no_nonce":
        del m["nonce"]
    elif case == "sha256_digest":
        m["digest"] = "SHA256"
    elif case == "short_pcr":
        m["pcrs"][0] = m["pcrs"][0][:32]
    elif case == "no_pcrs":
        m["pcrs"] = {}
    elif case == "no_timestamp":
        del m["timestamp"]
    else:
        m["timestamp"] = str(m["timestamp"])
    arr[2] = cbor2.dumps(m)
    with pytest.raises(AttestationError):
        AttestationPayload.decode(arr[2]) if case != "no_nonce" else None
        verify_document(document=cbor2.dumps(arr), policy=_policy(payload, clock), nonce=payload.nonce)


def test_a_document_from_the_future_is_refused():
    doc, payload, clock = _load("nitro_doc.cbor")
    early = lambda: clock() - datetime.timedelta(minutes=10)  # noqa: E731 - the document is 10 min ahead
    with pytest.raises(AttestationError):
        verify_document(document=doc, policy=_policy(payload, early), nonce=payload.nonce)


def _chain_ok(payload, clock) -> bool:
    from ppml_hybrid.rpc.attestation.roots import aws_nitro_root_der
    from ppml_hybrid.rpc.attestation.verifier import verify_chain

    try:
        verify_chain(payload=payload, root_der=aws_nitro_root_der(), now=clock())
        return True
    except AttestationError:
        return False


def test_the_genuine_chain_verifies_and_a_reordered_one_does_not():
    import dataclasses

    _, payload, clock = _load("nitro_doc.cbor")
    assert _chain_ok(payload, clock)
    bundle = payload.cabundle
    assert len(bundle) >= 3
    swapped = (bundle[0], bundle[2], bundle[1], *bundle[3:])
    assert not _chain_ok(dataclasses.replace(payload, cabundle=swapped), clock)
    assert not _chain_ok(dataclasses.replace(payload, cabundle=tuple(reversed(bundle))), clock)


def test_a_ca_certificate_presented_as_the_signing_certificate_is_refused():
    """The genuine chain cut one short: its last intermediate (a CA, correctly signed by the
    one before it) in the leaf's place."""
    import dataclasses

    _, payload, clock = _load("nitro_doc.cbor")
    cut = dataclasses.replace(payload, certificate=payload.cabundle[-1], cabundle=payload.cabundle[:-1])
    assert not _chain_ok(cut, clock)


def test_an_intermediate_that_is_not_a_ca_is_refused():
    """A chain root (CA) -> intermediate without CA:TRUE -> leaf, every signature valid."""
    import dataclasses

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    from ppml_hybrid.rpc.attestation.verifier import verify_chain

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, key, signer, ca):
        return (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(hours=1)).not_valid_after(now + datetime.timedelta(hours=1))
                .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
                .sign(signer, hashes.SHA384()))

    keys = [ec.generate_private_key(ec.SECP384R1()) for _ in range(3)]
    root = cert("root", "root", keys[0], keys[0], True)
    mid = cert("mid", "root", keys[1], keys[0], False)  # not a CA, yet it signs the leaf
    leaf = cert("leaf", "mid", keys[2], keys[1], False)
    der = lambda c: c.public_bytes(serialization.Encoding.DER)  # noqa: E731
    _, payload, _ = _load("nitro_doc.cbor")
    forged = dataclasses.replace(payload, cabundle=(der(root), der(mid)), certificate=der(leaf))
    with pytest.raises(AttestationError):
        verify_chain(payload=forged, root_der=der(root), now=now)
    honest = dataclasses.replace(forged, cabundle=(der(root), der(cert("mid", "root", keys[1], keys[0], True))))
    assert verify_chain(payload=honest, root_der=der(root), now=now) is not None
