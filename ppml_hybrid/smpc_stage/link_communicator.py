"""CrypTen's communicator interface over our authenticated links (:mod:`.links`).

CrypTen opens values with ``all_reduce`` (sum or XOR), ``all_gather``, ``broadcast``,
``gather``/``reduce``/``scatter``, and talks to the dealer with ``broadcast``/``send_obj``.
Here each collective is a set of point-to-point messages on the TLS links (at most 3 parties
and the dealer: a direct exchange is as fast as a ring or tree):

* ``all_reduce``/``all_gather``: send my tensor to every other member of the group, receive
  theirs, combine (wrapping int64 sum, XOR) or list them in rank order;
* ``broadcast``/``broadcast_obj``: the source sends to every other member;
* ``gather``/``reduce``: every member sends to the destination; ``scatter``: the source sends
  each member its piece.

Who learns what: exactly what the same call over gloo reveals to the members of its group,
and nothing to anyone else (every message travels inside TLS between pinned certificates).

Groups are :class:`LinkGroup` (a tuple of ranks): ``main_group`` (the parties),
``ttp_group`` (parties and dealer), ``ttp_comm_group`` (party 0 and the dealer), the same
names CrypTen's distributed communicator uses. :func:`install` makes this communicator the one
CrypTen's ``crypten.communicator.get()`` returns in this process (CrypTen reads it through
that module function on every call).
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch

from ppml_hybrid.smpc_stage.errors import PeerCommunicationError
from ppml_hybrid.smpc_stage.links import Mesh

_SUM, _BXOR = "sum", "bxor"


@dataclass(frozen=True)
class LinkGroup:
    """A set of ranks that take part in a collective (ascending)."""

    ranks: tuple

    def size(self) -> int:
        return len(self.ranks)


def _op_name(op: Any) -> str:
    if op is None:
        return _SUM
    name = str(getattr(op, "name", op)).lower().rsplit(".", 1)[-1]
    if name in (_SUM, _BXOR):
        return name
    raise PeerCommunicationError(f"reduce operation {op} is not supported by the link communicator (sum, bxor)")


def _combine(acc: torch.Tensor, other: torch.Tensor, op: str) -> None:
    if op == _SUM:
        acc.add_(other)  # int64 addition wraps: arithmetic in Z_2^64
    else:
        acc.bitwise_xor_(other)


def _as_bytes(t: torch.Tensor) -> memoryview:
    return memoryview(t.detach().contiguous().cpu().numpy()).cast("B")


def _dtype_name(t: torch.Tensor) -> str:
    return str(t.dtype).replace("torch.", "")


class _Done:
    """A finished asynchronous operation (``isend``)."""

    def wait(self) -> None:
        return None

    def is_completed(self) -> bool:
        return True


class _PendingRecv:
    """``irecv``: the message is collected (and copied into the tensor) on ``wait``."""

    def __init__(self, comm: "LinkCommunicator", tensor: torch.Tensor, src: int) -> None:
        self._comm, self._tensor, self._src, self._done = comm, tensor, src, False

    def wait(self) -> None:
        if not self._done:
            self._comm.recv(self._tensor, self._src)
            self._done = True

    def is_completed(self) -> bool:
        return self._done


class LinkCommunicator:
    """One process's CrypTen communicator on a :class:`~.links.Mesh` (module doc)."""

    def __init__(self, *, mesh: Mesh, parties: int) -> None:
        self.mesh = mesh
        self.rank = mesh.me.rank
        self.world_size = parties
        dealer = parties
        self.main_group = LinkGroup(tuple(range(parties)))
        self.ttp_group = LinkGroup(tuple(range(parties + 1)))
        self.ttp_comm_group = LinkGroup((0, dealer))
        self.ttp_initialized = False
        self._name = "dealer" if self.rank == dealer else f"party{self.rank}"
        self.reset_communication_stats()

    # ------------------------------------------------------------------ identity

    def get_rank(self) -> int:
        return self.rank

    def get_world_size(self) -> int:
        return self.world_size

    def get_ttp_rank(self) -> int:
        return self.world_size

    def set_name(self, name: str) -> None:
        self._name = name

    def get_name(self) -> str:
        return self._name

    def get_distributed_backend(self) -> str:
        return "tls-links"

    def reset_communication_stats(self) -> None:
        self.comm_rounds = 0
        self.comm_bytes = 0
        self.comm_time = 0

    def get_communication_stats(self) -> Dict[str, int]:
        return {"rounds": self.comm_rounds, "bytes": self.comm_bytes, "time": self.comm_time}

    def print_communication_stats(self) -> None:
        return None  # our Transport counts and reports

    # ------------------------------------------------------------------ tensor messages

    def send_tensors(self, dst: int, op: str, tensors: Sequence[torch.Tensor]) -> None:
        self.mesh.link(dst).send(op, [_as_bytes(t) for t in tensors],
                                 tensors=[[_dtype_name(t), list(t.shape)] for t in tensors])

    def recv_tensors(self, src: int, op: str, like: Optional[Sequence[torch.Tensor]] = None) -> List[torch.Tensor]:
        frame = self.mesh.link(src).recv(op)
        out, offset = [], 0
        specs = frame.meta.get("tensors", [])
        if like is not None and len(specs) != len(like):
            raise self._mismatch(src, op, f"{len(specs)} tensors instead of {len(like)}")
        view = memoryview(frame.data)
        for i, (dtype_name, shape) in enumerate(specs):
            dtype = getattr(torch, dtype_name)
            if like is not None and (dtype != like[i].dtype or list(like[i].shape) != list(shape)):
                raise self._mismatch(src, op, f"{dtype_name}{tuple(shape)} instead of "
                                              f"{_dtype_name(like[i])}{tuple(like[i].shape)}")
            count = int(np.prod(shape)) if shape else 1
            nbytes = count * torch.empty(0, dtype=dtype).element_size()
            if nbytes:
                t = torch.frombuffer(view[offset:offset + nbytes], dtype=dtype).reshape(shape)
            else:
                t = torch.empty(shape, dtype=dtype)
            out.append(t)
            offset += nbytes
        if offset != len(frame.data):
            raise self._mismatch(src, op, "a frame whose size does not match its shapes")
        return out

    def _mismatch(self, src: int, op: str, what: str) -> PeerCommunicationError:
        peer = self.mesh.link(src).peer
        return PeerCommunicationError(f"{self.mesh.me.name}: {peer.describe()} sent {what} in {op}: the roles "
                                      "run different programs or configs")

    def _group(self, group: Any) -> LinkGroup:
        return self.main_group if group is None else group

    # ------------------------------------------------------------------ point to point

    def send(self, tensor: torch.Tensor, dst: int) -> None:
        self.send_tensors(dst, "p2p", [tensor])

    def recv(self, tensor: torch.Tensor, src: Optional[int] = None) -> torch.Tensor:
        if src is None:
            raise PeerCommunicationError("recv from any source is not supported: name the sending rank")
        (got,) = self.recv_tensors(src, "p2p", [tensor])
        tensor.copy_(got)
        return tensor

    def isend(self, tensor: torch.Tensor, dst: int) -> _Done:
        self.send(tensor, dst)
        return _Done()

    def irecv(self, tensor: torch.Tensor, src: Optional[int] = None) -> _PendingRecv:
        if src is None:
            raise PeerCommunicationError("irecv from any source is not supported: name the sending rank")
        return _PendingRecv(self, tensor, src)

    # ------------------------------------------------------------------ collectives

    def all_reduce(self, input: Any, op: Any = None, batched: bool = False, group: Any = None) -> Any:
        name = _op_name(op)
        tensors = list(input) if batched else [input]
        results = [t.clone() for t in tensors]
        g = self._group(group)
        for r in g.ranks:
            if r != self.rank:
                self.send_tensors(r, "all_reduce", tensors)
        for r in g.ranks:
            if r != self.rank:
                for acc, other in zip(results, self.recv_tensors(r, "all_reduce", tensors)):
                    _combine(acc, other, name)
        return results if batched else results[0]

    def reduce(self, input: Any, dst: int, op: Any = None, batched: bool = False) -> Any:
        name = _op_name(op)
        tensors = list(input) if batched else [input]
        if self.rank != dst:
            self.send_tensors(dst, "reduce", tensors)
            return None
        results = [t.clone() for t in tensors]
        for r in self.main_group.ranks:
            if r != self.rank:
                for acc, other in zip(results, self.recv_tensors(r, "reduce", tensors)):
                    _combine(acc, other, name)
        return results if batched else results[0]

    def all_gather(self, tensor: torch.Tensor) -> List[torch.Tensor]:
        for r in self.main_group.ranks:
            if r != self.rank:
                self.send_tensors(r, "all_gather", [tensor])
        out = []
        for r in self.main_group.ranks:
            out.append(tensor.clone() if r == self.rank else self.recv_tensors(r, "all_gather", [tensor])[0])
        return out

    def gather(self, tensor: torch.Tensor, dst: int) -> List[Any]:
        if self.rank != dst:
            self.send_tensors(dst, "gather", [tensor])
            return [None]
        return [tensor.clone() if r == self.rank else self.recv_tensors(r, "gather", [tensor])[0]
                for r in self.main_group.ranks]

    def scatter(self, scatter_list: Sequence[torch.Tensor], src: int, size: Any = None, device: Any = None) -> torch.Tensor:
        if self.rank == src:
            for r in self.main_group.ranks:
                if r != self.rank:
                    self.send_tensors(r, "scatter", [scatter_list[r]])
            return scatter_list[self.rank].clone()
        return self.recv_tensors(src, "scatter")[0].clone()

    def broadcast(self, input: Any, src: int, group: Any = None, batched: bool = False) -> Any:
        tensors = list(input) if batched else [input]
        g = self._group(group)
        if self.rank == src:
            for r in g.ranks:
                if r != self.rank:
                    self.send_tensors(r, "broadcast", tensors)
        else:
            for t, got in zip(tensors, self.recv_tensors(src, "broadcast", tensors)):
                t.copy_(got)
        return input

    def barrier(self) -> None:
        for r in self.main_group.ranks:
            if r != self.rank:
                self.mesh.link(r).send("barrier")
        for r in self.main_group.ranks:
            if r != self.rank:
                self.mesh.link(r).recv("barrier")

    # ------------------------------------------------------------------ objects

    def send_obj(self, obj: Any, dst: int, group: Any = None) -> None:
        self.mesh.link(dst).send("obj", [pickle.dumps(obj)])

    def recv_obj(self, src: int, group: Any = None) -> Any:
        from crypten.common import serial

        return serial.restricted_loads(bytes(self.mesh.link(src).recv("obj").data))

    def broadcast_obj(self, obj: Any, src: int, group: Any = None) -> Any:
        from crypten.common import serial

        g = self._group(group)
        if self.rank == src:
            buf = pickle.dumps(obj)
            for r in g.ranks:
                if r != self.rank:
                    self.mesh.link(r).send("broadcast_obj", [buf])
            return obj
        return serial.restricted_loads(bytes(self.mesh.link(src).recv("broadcast_obj").data))

    # ------------------------------------------------------------------ raw bytes (our protocols)

    def send_bytes(self, data: bytes, dst: int, *, op: str) -> None:
        self.mesh.link(dst).send(op, [data])

    def recv_bytes(self, src: int, *, op: str) -> bytes:
        return bytes(self.mesh.link(src).recv(op).data)

    def close(self) -> None:
        self.mesh.close()


def install(crypten: Any, comm: LinkCommunicator) -> None:
    """Make ``comm`` this process's CrypTen communicator (CrypTen calls these module functions)."""
    module = crypten.communicator

    def get() -> LinkCommunicator:
        return comm

    def is_initialized() -> bool:
        return True

    def uninit() -> None:
        comm.close()

    module.get = get
    module.is_initialized = is_initialized
    module.uninit = uninit
