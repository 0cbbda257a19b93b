"""Typed refusals that cross the wire as gRPC status codes, and back into the same types.

A server raises a :class:`ServiceError` subclass; :func:`abort_with` turns it into the
subclass's status code, its message, and a ``ppml-reason`` trailer naming the class. A client
calls :func:`raise_typed` on a :class:`grpc.RpcError` to get the same class back (or the base
class of its status code when the reason is unknown to it).
"""

from __future__ import annotations

from typing import Dict, Optional, Type

import grpc

from ppml_hybrid.errors import PPMLError

REASON_KEY = "ppml-reason"


class ServiceError(PPMLError):
    """Base of every error a K or E service (or its client) raises on purpose."""

    exit_code = 6
    status: grpc.StatusCode = grpc.StatusCode.INTERNAL


class PermissionDeniedError(ServiceError):
    """The caller's certificate is not registered for this operation."""

    status = grpc.StatusCode.PERMISSION_DENIED


class FailedPreconditionError(ServiceError):
    """The request is well-formed but the protocol state does not allow it (now or ever)."""

    status = grpc.StatusCode.FAILED_PRECONDITION


class ResourceExhaustedError(ServiceError):
    """A quota or a memory bound was reached."""

    status = grpc.StatusCode.RESOURCE_EXHAUSTED


class InvalidArgumentError(ServiceError):
    """The request itself is malformed or does not match what was announced."""

    status = grpc.StatusCode.INVALID_ARGUMENT


class InvalidCiphertext(InvalidArgumentError):
    """Opaque on purpose (Fernet style): a ciphertext failed to parse or to match the context."""

    def __init__(self, message: str = "ciphertext rejected") -> None:
        super().__init__(message)


class UnavailableError(ServiceError):
    """The service cannot be reached (not started, gone, or the TLS handshake failed)."""

    status = grpc.StatusCode.UNAVAILABLE


_BY_STATUS: Dict[grpc.StatusCode, Type[ServiceError]] = {
    c.status: c for c in (PermissionDeniedError, FailedPreconditionError, ResourceExhaustedError,
                          InvalidArgumentError, UnavailableError)
}


def _all_subclasses(cls: type) -> Dict[str, type]:
    out = {}
    for sub in cls.__subclasses__():
        out[sub.__name__] = sub
        out.update(_all_subclasses(sub))
    return out


def abort_with(context: grpc.ServicerContext, exc: ServiceError) -> None:
    """Abort the RPC with ``exc``'s status, message and class name (never values)."""
    context.set_trailing_metadata(((REASON_KEY, type(exc).__name__),))
    context.abort(exc.status, str(exc))


def typed_error(err: grpc.RpcError, *, service: str) -> ServiceError:
    """The :class:`ServiceError` a client raises for a failed RPC."""
    code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
    details = err.details() if hasattr(err, "details") else str(err)
    reason: Optional[str] = None
    trailers = err.trailing_metadata() if hasattr(err, "trailing_metadata") else None
    for key, value in trailers or ():
        if key == REASON_KEY:
            reason = value
    cls = _all_subclasses(ServiceError).get(reason or "")
    if cls is None or cls.status != code:
        cls = _BY_STATUS.get(code, ServiceError)
    if cls is InvalidCiphertext:
        return InvalidCiphertext(f"{service}: {details}")
    if cls is UnavailableError:
        return UnavailableError(f"{service} is unreachable or refused the TLS handshake: {details}")
    return cls(f"{service}: {details}")
