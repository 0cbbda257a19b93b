"""Shared client plumbing: an mTLS channel to one service, with typed errors."""

from __future__ import annotations

from typing import Any, Callable, Optional

import grpc

from ppml_hybrid.rpc.errors import typed_error
from ppml_hybrid.rpc.options import CLIENT_OPTIONS
from ppml_hybrid.rpc.tls import Credential, channel_credentials
from ppml_hybrid.rpc.wire import ClientRecorder, WireLog


class ServiceChannel:
    """One mTLS channel; :meth:`call` turns a failed RPC into the service's typed error."""

    service_name = "service"

    def __init__(self, *, address: str, server_trust_pem: bytes, credential: Credential,
                 timeout_s: float = 600.0, wire_log: Optional[str] = None) -> None:
        creds = channel_credentials(server_trust_pem=server_trust_pem, client=credential)
        channel = grpc.secure_channel(address, creds, options=CLIENT_OPTIONS)
        if wire_log:
            channel = grpc.intercept_channel(channel, ClientRecorder(WireLog(path=wire_log)))
        self._channel = channel
        self.address = address
        self.timeout_s = timeout_s

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("timeout", self.timeout_s)
        try:
            return fn(*args, **kwargs)
        except grpc.RpcError as err:
            raise typed_error(err, service=self.service_name) from None

    def stream(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list:
        """A server-streaming call, read to the end."""
        kwargs.setdefault("timeout", self.timeout_s)
        try:
            return list(fn(*args, **kwargs))
        except grpc.RpcError as err:
            raise typed_error(err, service=self.service_name) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "ServiceChannel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
