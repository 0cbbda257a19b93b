"""Pinned attestation roots.

The AWS Nitro Enclaves root G1 (``data/aws_nitro_enclaves_root_g1.pem``, valid 2019-2049) must
hash (SHA-256 of its DER) to :data:`AWS_NITRO_ROOT_G1_SHA256`; :func:`aws_nitro_root_der` checks
that every time it loads the file, so a swapped file fails closed.
"""

from __future__ import annotations

import hashlib
from importlib import resources

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ppml_hybrid.errors import ConfigError

AWS_NITRO_ROOT_G1_SHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
_AWS_ROOT_FILE = "aws_nitro_enclaves_root_g1.pem"


def pem_to_der(pem: bytes) -> bytes:
    return x509.load_pem_x509_certificate(pem).public_bytes(serialization.Encoding.DER)


def aws_nitro_root_der() -> bytes:
    pem = resources.files("ppml_hybrid.rpc.attestation").joinpath("data", _AWS_ROOT_FILE).read_bytes()
    der = pem_to_der(pem)
    if hashlib.sha256(der).hexdigest() != AWS_NITRO_ROOT_G1_SHA256:
        raise ConfigError("the shipped AWS Nitro root certificate does not match its pinned SHA-256; reinstall")
    return der
