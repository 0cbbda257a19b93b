"""Accounting (and, for tests, link shaping) wrapped around CrypTen's communicator.

Every communicator call CrypTen makes (``all_reduce`` for arithmetic openings, ``all_gather``
for binary openings, ``gather``/``broadcast`` in truncation, ``send_obj``/``recv_obj``/
``broadcast`` to and from the dealer) goes through :class:`Transport`, installed once per
party process by :func:`install_transport`. It counts, per channel (``peers``: the other
parties; ``dealer``: CrypTen's TTP server):

* rounds: one per communicator call with the other parties (a call blocks until the peer's
  data arrived); on the dealer channel one per request (CrypTen's TTP client makes three calls
  per request, a request and two answers, which are one round trip);
* bytes sent and received by this party, with a point-to-point model of each collective: an
  all-reduce or all-gather among n parties sends this party's tensor to each of the n-1
  others and receives theirs; broadcast/gather/reduce/scatter move one tensor per peer.

Optional :class:`LinkShaping` emulates a network on loopback: before each peer call it sleeps
``rtt_s + 8 * bytes_sent / bandwidth_bps`` (the receiver waits for the sender, so receiving is
charged there); on the dealer channel a request costs one RTT plus its bytes and every answer
its bytes, after it arrives; the project's own dealer, whose answers arrive while party 0 works
with its peers (no round of their own), charges their bytes when party 0 settles them. This is
the delay :mod:`ppml_hybrid.smpc_stage.cost_model` is checked against. Optional :class:`ViewRecorder` keeps what this party learns from each message (the
opened value of an opening), for the statistical leakage test. Neither logs values.
"""

from __future__ import annotations

import functools
import pickle
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional

import torch

from ppml_hybrid.smpc_stage.errors import PeerCommunicationError

WRAPPED = (
    "send",
    "recv",
    "isend",
    "irecv",
    "scatter",
    "reduce",
    "all_reduce",
    "gather",
    "all_gather",
    "broadcast",
    "barrier",
    "send_obj",
    "recv_obj",
    "broadcast_obj",
)
CHANNELS = ("peers", "dealer", "services")


@dataclass(frozen=True)
class ChannelTraffic:
    """Traffic of one party on one channel."""

    rounds: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0

    def __add__(self, other: "ChannelTraffic") -> "ChannelTraffic":
        return ChannelTraffic(
            self.rounds + other.rounds,
            self.bytes_sent + other.bytes_sent,
            self.bytes_received + other.bytes_received,
        )

    def __sub__(self, other: "ChannelTraffic") -> "ChannelTraffic":
        return ChannelTraffic(
            self.rounds - other.rounds,
            self.bytes_sent - other.bytes_sent,
            self.bytes_received - other.bytes_received,
        )

    @property
    def bytes_total(self) -> int:
        return self.bytes_sent + self.bytes_received


@dataclass(frozen=True)
class Traffic:
    """One party's traffic over an interval: with the other parties, with the dealer, and with
    the HE services K and E (RPC payloads, recorded by the programs that call them)."""

    peers: ChannelTraffic = field(default_factory=ChannelTraffic)
    dealer: ChannelTraffic = field(default_factory=ChannelTraffic)
    injected_delay_s: float = 0.0
    services: ChannelTraffic = field(default_factory=ChannelTraffic)

    def __add__(self, other: "Traffic") -> "Traffic":
        return Traffic(
            self.peers + other.peers,
            self.dealer + other.dealer,
            self.injected_delay_s + other.injected_delay_s,
            self.services + other.services,
        )

    def __sub__(self, other: "Traffic") -> "Traffic":
        return Traffic(
            self.peers - other.peers,
            self.dealer - other.dealer,
            self.injected_delay_s - other.injected_delay_s,
            self.services - other.services,
        )

    @property
    def rounds(self) -> int:
        return self.peers.rounds + self.dealer.rounds + self.services.rounds

    @property
    def bytes_sent(self) -> int:
        return self.peers.bytes_sent + self.dealer.bytes_sent + self.services.bytes_sent

    @property
    def bytes_total(self) -> int:
        """Sent plus received on every channel (for MPC-only programs: comparable to CrypTen's ``comm_bytes``)."""
        return self.peers.bytes_total + self.dealer.bytes_total + self.services.bytes_total


@dataclass(frozen=True)
class LinkShaping:
    """Per-round delay and bandwidth limit injected before each communicator call."""

    rtt_s: float
    bandwidth_bps: float

    def delay_s(self, bytes_sent: int, *, round_trip: bool = True) -> float:
        return (self.rtt_s if round_trip else 0.0) + self.transfer_s(bytes_sent)

    def transfer_s(self, nbytes: int) -> float:
        return 8.0 * nbytes / self.bandwidth_bps


class ViewRecorder:
    """Keeps up to ``limit`` int64 values this party learns from peer messages (test aid)."""

    def __init__(self, *, limit: int = 2_000_000) -> None:
        self.limit = limit
        self.chunks: List[torch.Tensor] = []
        self.count = 0

    def add(self, values: torch.Tensor) -> None:
        if self.count >= self.limit:
            return
        flat = values.detach().reshape(-1)[: self.limit - self.count].clone()
        self.chunks.append(flat)
        self.count += flat.numel()

    def take(self) -> torch.Tensor:
        """All recorded values so far (and forget them)."""
        out = torch.cat(self.chunks) if self.chunks else torch.zeros(0, dtype=torch.long)
        self.chunks, self.count = [], 0
        return out


def _nbytes(x: Any) -> int:
    if isinstance(x, (list, tuple)):
        return sum(_nbytes(t) for t in x)
    if torch.is_tensor(x):
        return x.nelement() * x.element_size()
    return 0


def _obj_bytes(obj: Any) -> int:
    return len(pickle.dumps(obj)) + 4  # + the 4-byte size header CrypTen sends first


def _arg(args: tuple, kwargs: dict, index: int, name: str, default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


class Transport:
    """Counts (and optionally shapes) one party's communicator calls; see the module doc."""

    def __init__(
        self,
        comm: Any,
        *,
        shaping: Optional[LinkShaping] = None,
        on_enter: Optional[Callable[[], None]] = None,
        on_exit: Optional[Callable[[], None]] = None,
    ) -> None:
        self.comm = comm
        self.shaping = shaping
        self.recorder: Optional[ViewRecorder] = None
        self._on_enter = on_enter
        self._on_exit = on_exit
        self._lock = threading.Lock()
        self._counts: Dict[str, List[int]] = {c: [0, 0, 0] for c in CHANNELS}
        self._delay = 0.0
        self.rank = comm.get_rank()
        self.parties = comm.get_world_size()
        self._dealer_groups = tuple(
            g for g in (getattr(comm, "ttp_group", None), getattr(comm, "ttp_comm_group", None)) if g is not None
        )
        # the dealer provider (party 0): its asynchronous requests are settled after each peer call
        self.dealer: Optional[Any] = None
        self._dealer_charged = 0  # the dealer answers' bytes the shaping has charged

    # ------------------------------------------------------------------ public

    def snapshot(self) -> Traffic:
        """Cumulative traffic since installation.

        The dealer's asynchronous requests (party 0) count their bytes but no round: each
        overlaps the peer round that follows it (the projection charges that round once).
        """
        with self._lock:
            p, d, sv = (list(self._counts[c]) for c in CHANNELS)
            if self.dealer is not None:
                d[1] += self.dealer.bytes_sent
                d[2] += self.dealer.bytes_received
            return Traffic(ChannelTraffic(*p), ChannelTraffic(*d), self._delay, ChannelTraffic(*sv))

    def record_service_call(self, *, sent: int, received: int) -> None:
        """Count one RPC to K or E (one round) with its payload sizes; calls made by the
        program itself, outside CrypTen's communicator."""
        with self._lock:
            c = self._counts["services"]
            c[0] += 1
            c[1] += sent
            c[2] += received

    def set_shaping(self, shaping: Optional[LinkShaping]) -> None:
        """Start (or stop, with None) injecting per-round delay and bandwidth limits."""
        self.shaping = shaping
        # only the dealer's answers from now on are charged
        self._dealer_charged = self.dealer.bytes_received if self.dealer is not None else 0

    # ------------------------------------------------------------------ internals

    def _channel(self, group: Any) -> str:
        return "dealer" if group is not None and any(group is g for g in self._dealer_groups) else "peers"

    def _group_size(self, group: Any) -> int:
        if group is None:
            return self.parties
        return group.size()  # a LinkGroup (or, hazmat path, a torch ProcessGroup)

    def _sizes(self, name: str, args: tuple, kwargs: dict, result: Any) -> tuple:
        """(channel, bytes sent, bytes received) of one call; result may be None (before)."""
        n, me = self.parties, self.rank
        if name in ("send", "isend"):
            return "peers", _nbytes(args[0]), 0
        if name in ("recv", "irecv"):
            return "peers", 0, _nbytes(args[0])
        if name in ("all_reduce", "all_gather"):
            p = _nbytes(args[0])
            return "peers", (n - 1) * p, (n - 1) * p
        if name == "broadcast":
            group = _arg(args, kwargs, 2, "group")
            p, k = _nbytes(args[0]), self._group_size(group)
            src = args[1]
            return self._channel(group), (k - 1) * p if src == me else 0, 0 if src == me else p
        if name in ("gather", "reduce"):
            p, dst = _nbytes(args[0]), args[1]
            return "peers", 0 if dst == me else p, (n - 1) * p if dst == me else 0
        if name == "scatter":
            src = args[1]
            if src == me:
                return "peers", sum(_nbytes(t) for i, t in enumerate(args[0]) if i != me), 0
            return "peers", 0, _nbytes(result) if result is not None else 0
        if name == "send_obj":
            return self._channel(_arg(args, kwargs, 2, "group")), _obj_bytes(args[0]), 0
        if name == "recv_obj":
            return self._channel(_arg(args, kwargs, 1, "group")), 0, _obj_bytes(result) if result is not None else 0
        if name == "broadcast_obj":
            group = _arg(args, kwargs, 2, "group")
            k = self._group_size(group)
            if args[1] == me:
                return self._channel(group), (k - 1) * _obj_bytes(args[0]), 0
            return self._channel(group), 0, _obj_bytes(result) if result is not None else 0
        return "peers", 0, 0  # barrier

    def _record(self, name: str, args: tuple, result: Any) -> None:
        if self.recorder is None:
            return
        if name == "all_reduce":
            outs = result if isinstance(result, list) else [result]
            for t in outs:
                self.recorder.add(t)  # the opened (arithmetic) value
        elif name == "all_gather":
            acc = result[0].clone()
            for t in result[1:]:
                acc ^= t
            self.recorder.add(acc)  # the opened (binary, XOR) value
        elif name in ("recv", "gather", "scatter") and torch.is_tensor(result):
            self.recorder.add(result)

    def wrap(self, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(func)
        def call(*args: Any, **kwargs: Any) -> Any:
            channel, sent, _ = self._sizes(name, args, kwargs, None)
            if self._on_enter is not None:
                self._on_enter()
            try:
                if self.shaping is not None:
                    # a dealer answer is part of its request's round trip (module doc)
                    self._sleep(self.shaping.delay_s(sent, round_trip=channel == "peers" or sent > 0))
                try:
                    result = func(*args, **kwargs)
                except Exception as exc:  # gloo raises RuntimeError when a peer is gone
                    raise PeerCommunicationError(
                        f"party {self.rank}: communicator call {name} failed ({type(exc).__name__}: "
                        f"{str(exc).splitlines()[0] if str(exc) else ''}); another party or the dealer "
                        "probably stopped"
                    ) from exc
            finally:
                if self._on_exit is not None:
                    self._on_exit()
            channel, sent, received = self._sizes(name, args, kwargs, result)
            with self._lock:
                c = self._counts[channel]
                c[0] += 1 if channel == "peers" or sent > 0 else 0
                c[1] += sent
                c[2] += received
            if channel == "dealer" and self.shaping is not None:
                self._sleep(self.shaping.transfer_s(received))
            if channel == "peers":
                if self.dealer is not None:
                    self.dealer.settle()
                    if self.shaping is not None:
                        got = self.dealer.bytes_received
                        self._sleep(self.shaping.transfer_s(got - self._dealer_charged))
                        self._dealer_charged = got
                self._record(name, args, result)
            return result

        return call

    def _sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)
            with self._lock:
                self._delay += seconds


def install_transport(
    comm: Any,
    *,
    shaping: Optional[LinkShaping] = None,
    on_enter: Optional[Callable[[], None]] = None,
    on_exit: Optional[Callable[[], None]] = None,
) -> Transport:
    """Wrap every communicator method of ``comm`` (this process's CrypTen communicator)."""
    transport = Transport(comm, shaping=shaping, on_enter=on_enter, on_exit=on_exit)
    for name in WRAPPED:
        bound = getattr(comm, name)
        setattr(comm, name, transport.wrap(name, bound))
    return transport
