"""Shared server plumbing: a TLS gRPC server on loopback, and typed refusals as status codes."""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
from concurrent import futures
from typing import Any, Callable, Iterator, Optional, Tuple

import grpc

from ppml_hybrid.errors import ConfigError
from ppml_hybrid.rpc.errors import ServiceError, abort_with
from ppml_hybrid.rpc.options import GRPC_OPTIONS, LOOPBACK
from ppml_hybrid.rpc.wire import ServerRecorder, WireLog

log = logging.getLogger(__name__)


def refusals(fn: Callable) -> Callable:
    """Servicer method decorator: a raised ServiceError becomes its status code and message.

    Any other exception becomes INTERNAL with a generic message; only its type is logged
    (exception texts could quote values).
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(self: Any, request: Any, context: grpc.ServicerContext):
            with _service_boundary(fn.__name__, context):
                yield from fn(self, request, context)
        return gen

    @functools.wraps(fn)
    def unary(self: Any, request: Any, context: grpc.ServicerContext):
        with _service_boundary(fn.__name__, context):
            return fn(self, request, context)
    return unary


@contextlib.contextmanager
def _service_boundary(name: str, context: grpc.ServicerContext) -> Iterator[None]:
    """The edge of a service call: typed refusals become status codes; anything else INTERNAL."""
    try:
        yield
    except ServiceError as exc:
        log.info("refused %s: %s", name, exc)
        abort_with(context, exc)
    except Exception as exc:  # noqa: BLE001 - the boundary of the service
        log.error("%s failed with %s", name, type(exc).__name__)
        context.abort(grpc.StatusCode.INTERNAL, f"{name} failed inside the service")


def start_server(*, address: str, credentials: grpc.ServerCredentials, register: Callable[[grpc.Server], None],
                 wire_log: Optional[str] = None, workers: int = 16,
                 options: Tuple[Tuple[str, Any], ...] = ()) -> Tuple[grpc.Server, str]:
    """Start a mutual-TLS server bound to ``address`` (``host:port``; port 0 picks one); return it
    and the bound address. Across hosts a service binds its consortium address (or 0.0.0.0)."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(f"a service address is host:port; got {address!r}")
    host = LOOPBACK if host == "localhost" else host
    interceptors = (ServerRecorder(WireLog(path=wire_log)),) if wire_log else ()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers), options=GRPC_OPTIONS + tuple(options),
                         interceptors=interceptors)
    register(server)
    try:
        bound = server.add_secure_port(f"{host}:{int(port)}", credentials)
    except RuntimeError:
        bound = 0
    if not bound:
        raise ConfigError(f"cannot listen on {address!r}: the port is in use or the address is not this host's")
    server.start()
    return server, f"{host}:{bound}"
