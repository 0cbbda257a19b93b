"""Pseudo-random zero sharings from AES-CTR streams shared by neighbouring parties.

CrypTen shares an input by giving every party a share of zero (PRZS) and letting the owner
add its value: party i's share of zero is r_{i-1,i} - r_{i,i+1} (XOR for binary sharing),
where r_{i,i+1} comes from a stream only parties i and i+1 hold. CrypTen draws those from
Mersenne Twisters; here each pair's stream is an AES-256-CTR keystream whose key the pair
agrees on (:mod:`.key_agreement`), so no other party can predict it from outputs it sees.

:func:`install` also fences off every other CrypTen randomness source in this process: the
functions that draw ring elements from a torch generator raise :class:`InsecureRandomnessError`
when handed one, and draw from ``os.urandom`` when CrypTen asks for local randomness.

Who learns what: parties i and i+1 learn r_{i,i+1} (with two parties both parties hold both
streams, as in CrypTen: the zero sharing then only hides a value from everyone but its owner
until it is combined with other shares); no third process can compute it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Tuple

import torch

from ppml_hybrid.privacy.keystream import KeyStream, csprng_ring
from ppml_hybrid.smpc_stage.key_agreement import agree

ZERO_LABEL = b"zero sharing|"
# CrypTen modules that imported the ring-element helpers by name.
_RNG_MODULES = (
    "crypten.common.rng",
    "crypten.mpc.primitives.arithmetic",
    "crypten.mpc.primitives.binary",
    "crypten.mpc.provider.ttp_provider",
    "crypten.mpc.provider.tfp_provider",
)


class InsecureRandomnessError(RuntimeError):
    """CrypTen tried to draw secret-protecting randomness from a torch (Mersenne Twister) generator."""


@dataclass(frozen=True)
class NeighbourStreams:
    """Party i's streams with its neighbours: ``prev`` = r_{i-1,i}, ``next`` = r_{i,i+1}."""

    prev: KeyStream
    next: KeyStream

    def arithmetic(self, shape: Tuple[int, ...]) -> torch.Tensor:
        return self.prev.ring(shape) - self.next.ring(shape)

    def binary(self, shape: Tuple[int, ...]) -> torch.Tensor:
        return self.prev.ring(shape) ^ self.next.ring(shape)


def _label(src: int, dst: int) -> bytes:
    return ZERO_LABEL + f"{src}>{dst}".encode()


def neighbour_streams(*, rank: int, parties: int, comm: Any) -> NeighbourStreams:
    """Agree on the zero-sharing keys with both neighbours (pairs in one global order: no deadlock)."""
    keys: Dict[bytes, bytes] = {}
    pairs = [(i, j) for i in range(parties) for j in range(i + 1, parties)]
    for i, j in pairs:
        if rank in (i, j):
            peer = j if rank == i else i
            keys.update(agree(me=rank, peer=peer, comm=comm, labels=[_label(i, j), _label(j, i)]))
    prev_rank, next_rank = (rank - 1) % parties, (rank + 1) % parties
    return NeighbourStreams(prev=KeyStream(keys[_label(prev_rank, rank)]), next=KeyStream(keys[_label(rank, next_rank)]))


def _shape(size: tuple) -> Tuple[int, ...]:
    if len(size) == 1 and isinstance(size[0], (torch.Size, tuple, list)):
        return tuple(int(d) for d in size[0])
    return tuple(int(d) for d in size)


def install(crypten: Any, streams: NeighbourStreams) -> None:
    """Route CrypTen's zero sharings through ``streams`` and fence off torch generators (this process)."""
    import importlib

    from crypten.mpc.primitives import ArithmeticSharedTensor, BinarySharedTensor

    def arithmetic_przs(*size: Any, device: Any = None) -> Any:
        return ArithmeticSharedTensor.from_shares(streams.arithmetic(_shape(size)), precision=0)

    def binary_przs(*size: Any, device: Any = None) -> Any:
        return BinarySharedTensor.from_shares(streams.binary(_shape(size)))

    ArithmeticSharedTensor.PRZS = staticmethod(arithmetic_przs)
    BinarySharedTensor.PRZS = staticmethod(binary_przs)

    def ring_element(*size: Any, generator: Any = None, **kwargs: Any) -> torch.Tensor:
        if generator is not None:
            raise InsecureRandomnessError(
                "CrypTen asked for secret-protecting randomness from a torch generator (Mersenne Twister); "
                "this process only serves it from AES-CTR streams or os.urandom")
        return csprng_ring(_shape(size))

    def kbit_tensor(size: Any, bitlength: Any = None, generator: Any = None, **kwargs: Any) -> torch.Tensor:
        shape = _shape((size,))
        if bitlength is None or bitlength >= 64:
            return ring_element(shape, generator=generator)
        return ring_element(shape, generator=generator) & ((1 << bitlength) - 1)

    for name in _RNG_MODULES:
        module = importlib.import_module(name)
        if hasattr(module, "generate_random_ring_element"):
            module.generate_random_ring_element = ring_element
        if hasattr(module, "generate_kbit_random_tensor"):
            module.generate_kbit_random_tensor = kbit_tensor
