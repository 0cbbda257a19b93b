"""The coordinator's control channel: one mutually authenticated gRPC stream per party.

Service ``ppml_hybrid.Coordinator``, method ``Session`` (bidirectional stream of
:mod:`~ppml_hybrid.rpc.codec` messages). The coordinator listens on its consortium address
with its own role certificate; each party dials it with its own (the key it made with
``keygen``, the same as for its MPC links) and pins the coordinator's certificate from the
consortium file. The server accepts only the certificates it was given (by fingerprint, one
stream per role at a time) and tags every message it receives with the caller's role name,
so a party cannot speak for another. Only the coordinator's port must be open: parties dial
out.

Steps of one session: (1) the party opens the stream (TLS 1.3 handshake, both certificates
pinned); (2) messages flow both ways until either side ends; (3) a stream that breaks (the
peer process died, the link dropped) reaches the other side as an end-of-stream naming the
role, so the coordinator stops the run at once instead of waiting for a timeout.

Who learns what: exactly the messages sent (the roles define them: public weights, commands,
noised sums, site aggregates); the TLS layer hides them from the network.
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import grpc

from ppml_hybrid.errors import PPMLError
from ppml_hybrid.identity import LinkIdentity, cert_fingerprint
from ppml_hybrid.rpc.options import CLIENT_OPTIONS
from ppml_hybrid.rpc.server import start_server
from ppml_hybrid.rpc.tls import peer_fingerprint

log = logging.getLogger(__name__)

SERVICE, METHOD = "ppml_hybrid.Coordinator", "Session"
PATH = f"/{SERVICE}/{METHOD}"
_END = object()
KEEPALIVE = (("grpc.keepalive_time_ms", 10_000), ("grpc.keepalive_timeout_ms", 10_000),
             ("grpc.keepalive_permit_without_calls", 1), ("grpc.http2.max_pings_without_data", 0))
# The coordinator accepts those pings however long the stream stays idle (a step, K's
# verification): gRPC servers otherwise answer the third ping without data with a
# "too_many_pings" GOAWAY, which closed every party's stream after about 30 s of silence.
SERVER_KEEPALIVE = (("grpc.keepalive_permit_without_calls", 1),
                    ("grpc.http2.min_recv_ping_interval_without_data_ms", 100),
                    ("grpc.http2.max_ping_strikes", 0))


class ControlChannelError(PPMLError):
    """The control channel between the coordinator and a party failed or was refused."""

    exit_code = 6


class CoordinatorServer:
    """The coordinator's end: accepts one stream from each pinned role (module doc).

    ``callers``: role name -> that role's pinned certificate (PEM). :meth:`recv` returns
    ``(role, message bytes)``, or ``(role, None)`` when that role's stream ended.
    """

    def __init__(self, *, address: str, identity: LinkIdentity, callers: Mapping[str, bytes],
                 workers: Optional[int] = None) -> None:
        self._by_fp = {cert_fingerprint(pem): name for name, pem in callers.items()}
        self._inbox: "queue.Queue[Tuple[str, Optional[bytes]]]" = queue.Queue()
        self._outboxes: Dict[str, "queue.Queue[Any]"] = {}
        self._lock = threading.Lock()
        handler = grpc.method_handlers_generic_handler(
            SERVICE, {METHOD: grpc.stream_stream_rpc_method_handler(self._session)})
        creds = grpc.ssl_server_credentials([(identity.key_pem, identity.cert_pem)],
                                            root_certificates=b"".join(callers.values()), require_client_auth=True)
        self._server, self.address = start_server(
            address=address, credentials=creds, register=lambda s: s.add_generic_rpc_handlers((handler,)),
            workers=workers or 2 * len(callers) + 4, options=SERVER_KEEPALIVE)

    # ------------------------------------------------------------------ gRPC side

    def _session(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        fp = peer_fingerprint(context)
        role = self._by_fp.get(fp or "")
        if role is None:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "this certificate is not pinned by the coordinator")
        outbox: "queue.Queue[Any]" = queue.Queue()
        with self._lock:
            if role in self._outboxes:
                context.abort(grpc.StatusCode.ALREADY_EXISTS, f"{role} is already connected")
            self._outboxes[role] = outbox
        log.info("%s connected to the coordinator", role)

        def read() -> None:
            try:
                for message in requests:
                    self._inbox.put((role, bytes(message)))
            except grpc.RpcError:
                pass
            finally:
                self._inbox.put((role, None))
                outbox.put(_END)

        threading.Thread(target=read, name=f"control-{role}", daemon=True).start()
        try:
            while True:
                item = outbox.get()
                if item is _END or not context.is_active():
                    return
                yield item
        finally:
            with self._lock:
                self._outboxes.pop(role, None)

    # ------------------------------------------------------------------ coordinator side

    def connected(self) -> Tuple[str, ...]:
        with self._lock:
            return tuple(sorted(self._outboxes))

    def send(self, role: str, message: bytes) -> None:
        with self._lock:
            box = self._outboxes.get(role)
        if box is None:
            raise ControlChannelError(f"{role} is not connected to the coordinator")
        box.put(message)

    def recv(self, *, timeout_s: float) -> Tuple[str, Optional[bytes]]:
        try:
            return self._inbox.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError from None

    def close(self) -> None:
        with self._lock:
            boxes = list(self._outboxes.values())
        for box in boxes:
            box.put(_END)
        self._server.stop(grace=2.0).wait()


class CoordinatorLink:
    """A party's end of the control channel (module doc)."""

    def __init__(self, *, address: str, coordinator_cert_pem: bytes, identity: LinkIdentity,
                 connect_timeout_s: float) -> None:
        creds = grpc.ssl_channel_credentials(root_certificates=coordinator_cert_pem, private_key=identity.key_pem,
                                             certificate_chain=identity.cert_pem)
        self.address = address
        self._channel = grpc.secure_channel(address, creds, options=CLIENT_OPTIONS + KEEPALIVE)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=connect_timeout_s)
        except grpc.FutureTimeoutError:
            self._channel.close()
            raise ControlChannelError(
                f"no coordinator reachable at {address} within {connect_timeout_s:g} s, or its certificate is "
                "not the one pinned in the consortium file") from None
        self._outgoing: "queue.Queue[Any]" = queue.Queue()
        call = self._channel.stream_stream(PATH, request_serializer=None, response_deserializer=None)
        self._responses = call(iter(self._outgoing.get, _END), wait_for_ready=True)

    def send(self, message: bytes) -> None:
        self._outgoing.put(message)

    def recv(self) -> Optional[bytes]:
        """The next message, or None when the coordinator ended the session."""
        try:
            return next(self._responses)
        except StopIteration:
            return None
        except grpc.RpcError as err:
            raise ControlChannelError(f"the coordinator at {self.address} dropped this party: "
                                      f"{err.code().name}: {err.details()}") from None

    def close(self) -> None:
        self._outgoing.put(_END)
        self._channel.close()

