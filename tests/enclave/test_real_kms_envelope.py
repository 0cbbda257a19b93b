"""The CMS parser against a real KMS ``CiphertextForRecipient`` (tests/enclave/vectors/README.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ppml_hybrid.keyservice.sealing.cms import parse_enveloped
from ppml_hybrid.keyservice.sealing.errors import SealingError

VECTORS = Path(__file__).parent / "vectors"


def test_the_real_kms_envelope_parses_to_aws_own_iv_and_ciphertext():
    got = parse_enveloped((VECTORS / "kms_cms_input.bin").read_bytes())
    assert got.iv == (VECTORS / "kms_cms_iv.bin").read_bytes()
    assert got.ciphertext == (VECTORS / "kms_cms_ciphertext.bin").read_bytes()  # the chunked content, joined
    assert got.encrypted_key[:4] == bytes.fromhex("a0614593")


@pytest.mark.parametrize("cut", [1, 16, 100])
def test_the_real_envelope_truncated_is_refused_opaquely(cut):
    data = (VECTORS / "kms_cms_input.bin").read_bytes()
    with pytest.raises(SealingError):
        parse_enveloped(data[:-cut])
