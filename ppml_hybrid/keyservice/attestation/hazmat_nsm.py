"""HAZMAT, UNTESTED HERE: the Nitro Security Module device (``/dev/nsm``), inside an enclave only.

Protocol (aws-nitro-enclaves-nsm-api): one ioctl ``NSM_IOCTL_REQUEST = _IOWR(0x0A, 0, struct
nsm_message)`` where ``struct nsm_message { struct iovec request; struct iovec response; }``
(32 bytes on 64-bit Linux). The request is CBOR
``{"Attestation": {"user_data": b|null, "nonce": b|null, "public_key": b|null}}``; the response
is CBOR ``{"Attestation": {"document": COSE_Sign1 bytes}}`` or ``{"Error": "<code>"}``.
The NSM fills PCRs, timestamp, module id and the AWS certificate chain; the enclave's code
cannot influence them. No machine here has the device: only :func:`encode_request` and
:func:`decode_response` are tested; :meth:`NsmDevice.attest` runs only inside an enclave.
"""

from __future__ import annotations

import ctypes
import os
from typing import Optional

import cbor2

from ppml_hybrid.errors import PPMLError

NSM_PATH = "/dev/nsm"
NSM_REQUEST_MAX = 0x1000
NSM_RESPONSE_MAX = 0x3000
_IOC_WRITE_READ = 3
NSM_IOCTL_REQUEST = (_IOC_WRITE_READ << 30) | (32 << 16) | (0x0A << 8) | 0


class NsmUnavailableError(PPMLError):
    """No NSM device (not inside a Nitro Enclave) or the device refused the request."""


class _Iovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class _NsmMessage(ctypes.Structure):
    _fields_ = [("request", _Iovec), ("response", _Iovec)]


def encode_request(*, user_data: Optional[bytes], nonce: Optional[bytes], public_key: Optional[bytes]) -> bytes:
    req = cbor2.dumps({"Attestation": {"user_data": user_data, "nonce": nonce, "public_key": public_key}})
    if len(req) > NSM_REQUEST_MAX:
        raise NsmUnavailableError("NSM attestation request too large")
    return req


def decode_response(raw: bytes) -> bytes:
    try:
        msg = cbor2.loads(raw)
    except Exception:  # noqa: BLE001
        raise NsmUnavailableError("NSM answered with something that is not CBOR") from None
    if isinstance(msg, dict) and isinstance(msg.get("Attestation"), dict):
        doc = msg["Attestation"].get("document")
        if isinstance(doc, bytes):
            return doc
    err = msg.get("Error") if isinstance(msg, dict) else None
    raise NsmUnavailableError(f"NSM refused the attestation request ({err or 'unexpected answer'})")


class NsmDevice:
    """Attestation documents from the NSM (``development = False``)."""

    development = False

    def __init__(self, *, path: str = NSM_PATH) -> None:
        if not os.path.exists(path):
            raise NsmUnavailableError(f"{path} does not exist: not inside a Nitro Enclave (use the development signer "
                                      f"locally)")
        self._path = path

    def attest(self, *, user_data: Optional[bytes], nonce: Optional[bytes], public_key: Optional[bytes]) -> bytes:
        import fcntl

        req = encode_request(user_data=user_data, nonce=nonce, public_key=public_key)
        req_buf = ctypes.create_string_buffer(req, len(req))
        resp_buf = ctypes.create_string_buffer(NSM_RESPONSE_MAX)
        msg = _NsmMessage(_Iovec(ctypes.addressof(req_buf), len(req)),
                          _Iovec(ctypes.addressof(resp_buf), NSM_RESPONSE_MAX))
        fd = os.open(self._path, os.O_RDWR)
        try:
            fcntl.ioctl(fd, NSM_IOCTL_REQUEST, msg)
        except OSError as exc:
            raise NsmUnavailableError(f"NSM ioctl failed ({exc.strerror})") from None
        finally:
            os.close(fd)
        return decode_response(resp_buf.raw[:msg.response.iov_len])
