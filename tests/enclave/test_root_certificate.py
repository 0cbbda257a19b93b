import hashlib
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ppml_hybrid.rpc.attestation.roots import AWS_NITRO_ROOT_G1_SHA256, aws_nitro_root_der

PINNED = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"


def test_shipped_aws_root_matches_published_fingerprint():
    pem = resources.files("ppml_hybrid.rpc.attestation").joinpath(
        "data", "aws_nitro_enclaves_root_g1.pem").read_bytes()
    cert = x509.load_pem_x509_certificate(pem)
    assert hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest() == PINNED
    assert AWS_NITRO_ROOT_G1_SHA256 == PINNED
    assert hashlib.sha256(aws_nitro_root_der()).hexdigest() == PINNED
    assert cert.subject.rfc4514_string() == "CN=aws.nitro-enclaves,OU=AWS,O=Amazon,C=US"
