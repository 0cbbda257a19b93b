"""The NSM device interface, as far as it can be checked without /dev/nsm."""

import cbor2
import pytest

from ppml_hybrid.keyservice.attestation.hazmat_nsm import (
    NSM_IOCTL_REQUEST, NsmDevice, NsmUnavailableError, decode_response, encode_request,
)


def test_ioctl_number_is_iowr_0x0a_0_of_32_bytes():
    assert NSM_IOCTL_REQUEST == 0xC0200A00


def test_request_and_response_encoding():
    req = cbor2.loads(encode_request(user_data=b"u", nonce=b"n", public_key=None))
    assert req == {"Attestation": {"user_data": b"u", "nonce": b"n", "public_key": None}}
    assert decode_response(cbor2.dumps({"Attestation": {"document": b"doc"}})) == b"doc"
    with pytest.raises(NsmUnavailableError):
        decode_response(cbor2.dumps({"Error": "InvalidArgument"}))


def test_device_absent_outside_an_enclave(tmp_path):
    with pytest.raises(NsmUnavailableError):
        NsmDevice(path=str(tmp_path / "nsm"))
