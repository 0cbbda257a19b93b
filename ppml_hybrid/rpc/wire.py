"""Test instrumentation: record the type of every message a process receives or sends.

Installed only when a launch spec names a ``wire_log`` file. One JSON line per message:
direction (``in``/``out``), side (``server``: a request to / response from this process's
service; ``client``: a response this process got from / request it sent to another
service), method, message type and the names of the fields set — never field values. The
tests read it to show what E ever received over the wire.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Iterator

import grpc


class WireLog:
    def __init__(self, *, path: str) -> None:
        self._path = path
        self._lock = threading.Lock()

    def record(self, *, direction: str, side: str, method: str, message: Any) -> None:
        fields = sorted(f.name for f, _ in message.ListFields()) if hasattr(message, "ListFields") else []
        oneof = []
        for o in getattr(getattr(message, "DESCRIPTOR", None), "oneofs", ()):
            which = message.WhichOneof(o.name)
            if which:
                oneof.append(which)
        line = json.dumps({"direction": direction, "side": side, "method": method,
                           "type": getattr(getattr(message, "DESCRIPTOR", None), "full_name", type(message).__name__),
                           "fields": fields, "oneof": oneof})
        with self._lock, open(self._path, "a", encoding="utf-8") as f:
            f.write(line + "\n")

    def wrap_iter(self, it: Iterator, *, direction: str, side: str, method: str) -> Iterator:
        for m in it:
            self.record(direction=direction, side=side, method=method, message=m)
            yield m


class ServerRecorder(grpc.ServerInterceptor):
    """Records requests into and responses out of this process's service."""

    def __init__(self, log: WireLog) -> None:
        self._log = log

    def intercept_service(self, continuation: Callable, handler_call_details: Any) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method
        log = self._log

        def wrap_unary_in(fn: Callable) -> Callable:
            def inner(request: Any, context: Any) -> Any:
                log.record(direction="in", side="server", method=method, message=request)
                return fn(request, context)
            return inner

        def wrap_stream_in(fn: Callable) -> Callable:
            def inner(requests: Iterator, context: Any) -> Any:
                return fn(log.wrap_iter(requests, direction="in", side="server", method=method), context)
            return inner

        def out_unary(fn: Callable) -> Callable:
            def inner(req: Any, context: Any) -> Any:
                resp = fn(req, context)
                log.record(direction="out", side="server", method=method, message=resp)
                return resp
            return inner

        def out_stream(fn: Callable) -> Callable:
            def inner(req: Any, context: Any) -> Any:
                return log.wrap_iter(fn(req, context), direction="out", side="server", method=method)
            return inner

        if handler.unary_unary:
            fn = out_unary(wrap_unary_in(handler.unary_unary))
            return grpc.unary_unary_rpc_method_handler(fn, handler.request_deserializer, handler.response_serializer)
        if handler.unary_stream:
            fn = out_stream(wrap_unary_in(handler.unary_stream))
            return grpc.unary_stream_rpc_method_handler(fn, handler.request_deserializer, handler.response_serializer)
        if handler.stream_unary:
            fn = out_unary(wrap_stream_in(handler.stream_unary))
            return grpc.stream_unary_rpc_method_handler(fn, handler.request_deserializer, handler.response_serializer)
        fn = out_stream(wrap_stream_in(handler.stream_stream))
        return grpc.stream_stream_rpc_method_handler(fn, handler.request_deserializer, handler.response_serializer)


class ClientRecorder(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor,
                     grpc.StreamUnaryClientInterceptor):
    """Records requests sent and responses received on this process's client channels."""

    def __init__(self, log: WireLog) -> None:
        self._log = log

    def intercept_unary_unary(self, continuation: Callable, details: Any, request: Any) -> Any:
        self._log.record(direction="out", side="client", method=details.method, message=request)
        return self._record_response(continuation(details, request), details.method)

    def intercept_unary_stream(self, continuation: Callable, details: Any, request: Any) -> Any:
        self._log.record(direction="out", side="client", method=details.method, message=request)
        return _StreamProxy(continuation(details, request), self._log, details.method)

    def intercept_stream_unary(self, continuation: Callable, details: Any, request_iterator: Iterator) -> Any:
        reqs = self._log.wrap_iter(request_iterator, direction="out", side="client", method=details.method)
        return self._record_response(continuation(details, reqs), details.method)

    def _record_response(self, call: Any, method: str) -> Any:
        """Log a unary response (a failed call has none to log) and hand the call back."""
        try:
            self._log.record(direction="in", side="client", method=method, message=call.result())
        except grpc.RpcError:
            pass
        return call


class _StreamProxy:
    """Iterates a response stream, recording each message; other attributes pass through."""

    def __init__(self, call: Any, log: WireLog, method: str) -> None:
        self._call = call
        self._log = log
        self._method = method

    def __iter__(self) -> "_StreamProxy":
        return self

    def __next__(self) -> Any:
        m = next(self._call)
        self._log.record(direction="in", side="client", method=self._method, message=m)
        return m

    def __getattr__(self, name: str) -> Any:
        return getattr(self._call, name)
