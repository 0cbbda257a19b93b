"""Correlated randomness from the dealer process, drawn from AES-CTR streams (replaces CrypTen's TTP).

CrypTen's TTP provider seeds each party's generator with ``torch.randint`` on torch's default
generator (predictable in forked processes), sends the seeds in clear, and draws triples from
Mersenne Twisters, whose state about 624 outputs reveal (a party learns the other party's
outputs from the openings of products on its own rows). This provider keeps CrypTen's
protocol shape (every party draws its share of each value from a stream it shares with the
dealer; only party 0 receives a correction from the dealer) with cryptographic parts:

Setup (:func:`party_streams` at each party, :func:`serve` at the dealer; once per world):

1. party j and the dealer agree on a key over their link (ephemeral X25519 + HKDF, private
   keys from each process's ``os.urandom``, :mod:`.key_agreement`): the triple stream s_j;
   party 0 also gets a pad stream for the dealer's corrections. Nothing secret is sent.

Per request (party side: :class:`DealerProvider`; dealer side: :class:`_DealerState`):

2. every party draws its shares of the random operands from s_j: a_j, b_j (triples), r_j
   (square, wrap and B2A pairs); parties j >= 1 also draw their share of the product c_j;
3. party 0 sends the request (operation and public sizes only, a JSON frame) to the dealer;
   the dealer draws every s_j in the same order, computes c = op(sum a_j, sum b_j) and
   c_0 = c - sum_{j>=1} c_j, and returns c_0 XOR pad (one message each way). Party 0 does not
   wait: both messages are asynchronous and the correction is settled (waited for, unpadded in
   place) when the next peer communication returns (:meth:`DealerProvider.settle`, called by
   the transport). Every correlated value is used only after the peer opening it masks, so the
   dealer's round trip overlaps the peers' instead of preceding it;
4. every share is wrapped as a CrypTen shared tensor; nothing is opened.

Who learns what: the dealer sees request sizes and its own randomness (it knows every triple:
it must collude with no party); party j sees its own stream's outputs and c_0 (party 0);
a party that learns the value of a triple (from openings of products on its own rows) learns
nothing about later triples (AES-CTR is a pseudo-random function of the counter under a key it
never sees). An eavesdropper on the links sees public keys, request sizes and padded
corrections.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ppml_hybrid.privacy.keystream import KeyStream
from ppml_hybrid.smpc_stage.errors import RunAbortedError
from ppml_hybrid.smpc_stage.key_agreement import agree

log = logging.getLogger(__name__)

PROVIDER_NAME = "PPML_DEALER"
FRAME_BYTES = 1024  # one fixed-size request frame: one message per request
BEAVER_OPS = ("mul", "matmul", "conv1d", "conv2d", "conv_transpose1d", "conv_transpose2d")
OP_KWARGS = ("stride", "padding", "dilation", "groups", "output_padding")
TRIPLES_LABEL = b"dealer triples|"
PAD_LABEL = b"dealer pad|"


class DealerProtocolError(RuntimeError):
    """A malformed or unexpected dealer request (the dealer stops; the run fails)."""


@dataclass(frozen=True)
class PartyStreams:
    """What one party holds for the dealer protocol: its triple stream and (party 0) the pad."""

    triples: KeyStream
    pad: Optional[KeyStream]


def _label(base: bytes, rank: int) -> bytes:
    return base + str(rank).encode()


def party_streams(*, rank: int, dealer_rank: int, comm: Any) -> PartyStreams:
    """Step 1 at party ``rank``: agree on its keys with the dealer."""
    labels = [_label(TRIPLES_LABEL, rank)] + ([_label(PAD_LABEL, rank)] if rank == 0 else [])
    keys = agree(me=rank, peer=dealer_rank, comm=comm, labels=labels)
    pad = KeyStream(keys[labels[1]]) if rank == 0 else None
    return PartyStreams(triples=KeyStream(keys[labels[0]]), pad=pad)


def _size(x: Any) -> torch.Size:
    return torch.Size([int(d) for d in x])


def broadcast_size(a: Sequence[int], b: Sequence[int]) -> torch.Size:
    """NumPy/torch broadcasting of two shapes (pure Python: torch's helper imports sympy, seconds)."""
    out = []
    for x, y in zip(reversed([1] * (len(b) - len(a)) + list(a)), reversed([1] * (len(a) - len(b)) + list(b))):
        if x != y and 1 not in (x, y):
            raise DealerProtocolError(f"shapes {tuple(a)} and {tuple(b)} do not broadcast")
        out.append(max(x, y) if 1 in (x, y) else x)
    return torch.Size(reversed(out))


def _pair(v: Any, n: int) -> List[int]:
    return list(v) if isinstance(v, (list, tuple)) else [int(v)] * n


def result_size(op: str, size0: Sequence[int], size1: Sequence[int], kwargs: Dict[str, Any]) -> torch.Size:
    """Shape of op(a, b) from the shapes alone (the formulas of torch's documentation)."""
    a, b = [int(d) for d in size0], [int(d) for d in size1]
    if op == "mul":
        return broadcast_size(a, b)
    if op == "matmul":
        if len(a) == 1 and len(b) == 1:
            return torch.Size([])
        if len(a) == 1:
            return torch.Size(b[:-2] + b[-1:])
        if len(b) == 1:
            return torch.Size(a[:-1])
        return torch.Size(list(broadcast_size(a[:-2], b[:-2])) + [a[-2], b[-1]])
    dims = len(a) - 2
    stride, pad = _pair(kwargs.get("stride", 1), dims), _pair(kwargs.get("padding", 0), dims)
    dil = _pair(kwargs.get("dilation", 1), dims)
    groups = int(kwargs.get("groups", 1))
    if op.startswith("conv_transpose"):
        out_pad = _pair(kwargs.get("output_padding", 0), dims)
        spatial = [(a[2 + i] - 1) * stride[i] - 2 * pad[i] + dil[i] * (b[2 + i] - 1) + out_pad[i] + 1
                   for i in range(dims)]
        return torch.Size([a[0], b[1] * groups] + spatial)
    spatial = [(a[2 + i] + 2 * pad[i] - dil[i] * (b[2 + i] - 1) - 1) // stride[i] + 1 for i in range(dims)]
    return torch.Size([a[0], b[0]] + spatial)


def _check_request(req: Dict[str, Any]) -> None:
    kind = req.get("kind")
    if kind not in ("additive", "square", "binary", "wraps", "B2A", "terminate", "abort"):
        raise DealerProtocolError(f"unknown dealer request kind {kind!r}")
    if kind == "additive":
        if req.get("op") not in BEAVER_OPS:
            raise DealerProtocolError(f"dealer request for unsupported operation {req.get('op')!r}")
        if any(k not in OP_KWARGS for k in req.get("kwargs", {})):
            raise DealerProtocolError(f"dealer request with unsupported arguments {sorted(req['kwargs'])}")


def _kwargs_json(kwargs: Dict[str, Any]) -> Dict[str, Any]:
    out = {}
    for k, v in kwargs.items():
        if k not in OP_KWARGS:
            raise DealerProtocolError(f"the dealer cannot serve a triple with argument {k!r}")
        out[k] = list(v) if isinstance(v, (tuple, list)) else v
    return out


def _encode(req: Dict[str, Any]) -> bytes:
    """A fixed-size frame: every request looks the same size on the wire."""
    data = json.dumps(req, separators=(",", ":")).encode()
    if len(data) > FRAME_BYTES:
        raise DealerProtocolError(f"dealer request of {len(data)} bytes exceeds the {FRAME_BYTES}-byte frame")
    return data + b"\0" * (FRAME_BYTES - len(data))


def _decode(frame: bytes) -> Dict[str, Any]:
    raw = frame.rstrip(b"\0")
    try:
        req = json.loads(raw.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DealerProtocolError(f"unreadable dealer request ({type(exc).__name__})") from None
    if not isinstance(req, dict):
        raise DealerProtocolError("dealer request is not an object")
    _check_request(req)
    return req


class DealerProvider:
    """Party side of the dealer protocol (steps 2-4); CrypTen's provider interface.

    ``comm`` is this party's :class:`~.link_communicator.LinkCommunicator`: requests and
    corrections travel on party 0's TLS link to the dealer (their bytes are counted here and
    reported by the transport; they cost no round of their own, see step 3).
    """

    NAME = PROVIDER_NAME

    def __init__(self, *, comm: Any, streams: PartyStreams) -> None:
        self._comm = comm
        self._rank = comm.get_rank()
        self._dealer = comm.get_ttp_rank()
        self._s = streams.triples
        self._pad = streams.pad
        self._pending: List[Tuple[torch.Tensor, torch.Tensor]] = []
        self.requests = 0
        self.bytes_sent = 0
        self.bytes_received = 0

    def __repr__(self) -> str:
        return f"DealerProvider(rank={self._rank})"

    # ------------------------------------------------------------------ CrypTen's interface

    def generate_additive_triple(self, size0: Any, size1: Any, op: str, device: Any = None, *args: Any,
                                 **kwargs: Any) -> Any:
        if args:
            raise DealerProtocolError(f"positional arguments to {op} triples are not supported")
        a, b = self._s.ring(size0), self._s.ring(size1)
        c_size = result_size(op, size0, size1, kwargs)
        if self._rank == 0:
            c = self._request({"kind": "additive", "op": op, "size0": list(size0), "size1": list(size1),
                               "kwargs": _kwargs_json(kwargs)}, c_size)
        else:
            c = self._s.ring(c_size)
        return self._arith(a), self._arith(b), self._arith(c)

    def square(self, size: Any, device: Any = None) -> Any:
        r = self._s.ring(size)
        r2 = self._request({"kind": "square", "size": list(size)}, _size(size)) if self._rank == 0 else self._s.ring(size)
        return self._arith(r), self._arith(r2)

    def generate_binary_triple(self, size0: Any, size1: Any, device: Any = None) -> Any:
        a, b = self._s.ring(size0), self._s.ring(size1)
        c_size = broadcast_size(size0, size1)
        if self._rank == 0:
            c = self._request({"kind": "binary", "size0": list(size0), "size1": list(size1)}, c_size)
        else:
            c = self._s.ring(c_size)
        return self._binary(a), self._binary(b), self._binary(c)

    def wrap_rng(self, size: Any, device: Any = None) -> Any:
        r = self._s.ring(size)
        theta = self._request({"kind": "wraps", "size": list(size)}, _size(size)) if self._rank == 0 else self._s.ring(size)
        return self._arith(r), self._arith(theta)

    def B2A_rng(self, size: Any, device: Any = None) -> Any:
        r_bin = self._s.bits(size, bitlength=1)
        r_arith = self._request({"kind": "B2A", "size": list(size)}, _size(size)) if self._rank == 0 else self._s.ring(size)
        return self._arith(r_arith), self._binary(r_bin)

    # ------------------------------------------------------------------ protocol

    def terminate(self, *, failed: bool = False) -> None:
        """Party 0 tells the dealer to stop: the run ended (``terminate``) or failed (``abort``:
        the dealer then exits with an error too, rather than as if the run had finished)."""
        if self._rank == 0:
            if failed:
                self._pending = []  # answers to a failed run are not waited for
                self._comm.send_bytes(_encode({"kind": "abort"}), self._dealer, op="dealer_request")
                return
            self.settle()
            self._comm.send_bytes(_encode({"kind": "terminate"}), self._dealer, op="dealer_request")

    def settle(self) -> None:
        """Wait for every outstanding correction and remove its pad, in place."""
        pending, self._pending = self._pending, []
        for buffer, pad in pending:
            (answer,) = self._comm.recv_tensors(self._dealer, "dealer_answer", [buffer])
            torch.bitwise_xor(answer, pad, out=buffer)

    def _request(self, req: Dict[str, Any], size: torch.Size) -> torch.Tensor:
        frame = _encode(req)
        buffer = torch.empty(size, dtype=torch.long)
        # the link's reader thread collects the answer while party 0 goes on with its peers
        self._comm.send_bytes(frame, self._dealer, op="dealer_request")
        self._pending.append((buffer, self._pad.ring(size)))  # the pad is drawn in request order
        self.requests += 1
        self.bytes_sent += len(frame)
        self.bytes_received += buffer.numel() * 8
        return buffer  # filled by settle(), before the opening that follows returns

    @staticmethod
    def _arith(share: torch.Tensor) -> Any:
        from crypten.mpc.primitives import ArithmeticSharedTensor

        return ArithmeticSharedTensor.from_shares(share, precision=0)

    @staticmethod
    def _binary(share: torch.Tensor) -> Any:
        from crypten.mpc.primitives import BinarySharedTensor

        return BinarySharedTensor.from_shares(share)


class _DealerState:
    """Dealer side of step 3: every party's stream, and the computation of party 0's correction."""

    def __init__(self, streams: List[KeyStream], pad: KeyStream) -> None:
        self._s = streams  # index = party rank
        self._pad = pad

    def _sum(self, size: Any) -> torch.Tensor:
        return sum(s.ring(size) for s in self._s)

    def _others(self, size: Any) -> torch.Tensor:
        return sum(s.ring(size) for s in self._s[1:])

    def _xor(self, size: Any, bitlength: int = 64) -> torch.Tensor:
        out = self._s[0].bits(size, bitlength=bitlength)
        for s in self._s[1:]:
            out = out ^ s.bits(size, bitlength=bitlength)
        return out

    def answer(self, req: Dict[str, Any]) -> torch.Tensor:
        kind = req["kind"]
        if kind == "additive":
            a, b = self._sum(req["size0"]), self._sum(req["size1"])
            c = getattr(torch, req["op"])(a, b, **req.get("kwargs", {}))
            out = c - self._others(c.size())
        elif kind == "square":
            r = self._sum(req["size"])
            out = r * r - self._others(r.size())
        elif kind == "binary":
            a, b = self._xor(req["size0"]), self._xor(req["size1"])
            c = a & b
            for s in self._s[1:]:
                c = c ^ s.ring(c.size())
            out = c
        elif kind == "wraps":
            from crypten.common.util import count_wraps

            r = [s.ring(req["size"]) for s in self._s]
            out = count_wraps(r) - self._others(_size(req["size"]))
        else:  # B2A
            r_bin = self._xor(req["size"], bitlength=1)
            out = r_bin - self._others(_size(req["size"]))
        return out ^ self._pad.ring(out.size())


def serve(*, comm: Any, parties: int) -> int:
    """The dealer process's loop (steps 1 and 3) until party 0 sends ``terminate``.

    ``comm`` is the dealer's CrypTen communicator. Returns the number of requests served.
    """
    me = comm.get_rank()
    streams, pad = [], None
    for j in range(parties):
        labels = [_label(TRIPLES_LABEL, j)] + ([_label(PAD_LABEL, j)] if j == 0 else [])
        keys = agree(me=me, peer=j, comm=comm, labels=labels)
        streams.append(KeyStream(keys[labels[0]]))
        if j == 0:
            pad = KeyStream(keys[labels[1]])
    state = _DealerState(streams, pad)
    served = 0
    while True:
        req = _decode(comm.recv_bytes(0, op="dealer_request"))
        if req["kind"] == "terminate":
            log.info("dealer: terminate after %d requests", served)
            return served
        if req["kind"] == "abort":
            raise RunAbortedError(f"dealer: party 0 aborted the run after {served} requests (a party failed)")
        comm.send_tensors(0, "dealer_answer", [state.answer(req)])
        served += 1
