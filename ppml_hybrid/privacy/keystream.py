"""Cryptographic random streams: AES-256-CTR keyed from the OS CSPRNG (or from a key agreement).

Every random value that protects a secret in the MPC (Beaver triples, zero sharings, wrap and
B2A pairs) is drawn from a :class:`KeyStream`: AES-256 in counter mode over a fresh 256-bit key.
Unlike torch's Mersenne Twister, no number of outputs reveals the key or the later outputs
(AES is a pseudo-random permutation), and a forked process that inherits a stream object still
cannot predict a stream keyed after the fork.

Two processes holding the same key draw the same values in the same order: that is how a
party and the dealer (or two neighbouring parties) agree on correlated randomness without
sending it. Keys come from :func:`fresh_key` (``os.urandom``) or from an X25519 agreement
(:mod:`ppml_hybrid.smpc_stage.key_agreement`); they are never logged or written.
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np
import torch
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

KEY_BYTES = 32


def fresh_key() -> bytes:
    """A 256-bit key from the OS CSPRNG of this process."""
    return os.urandom(KEY_BYTES)


def _numel(shape: Sequence[int]) -> int:
    return int(np.prod(tuple(shape), dtype=np.int64)) if len(tuple(shape)) else 1


class KeyStream:
    """AES-256-CTR keystream read as uniform integers; draws advance the counter.

    ``ring(shape)``: int64 uniform over Z_2^64 (CrypTen's ring elements);
    ``bits(shape, bitlength)``: int64 uniform in [0, 2^bitlength).
    The key stays inside the cipher object; ``repr`` shows nothing of it.
    """

    __slots__ = ("_encryptor", "drawn_bytes")

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
            raise ValueError(f"a KeyStream needs a {KEY_BYTES}-byte key")
        # A zero nonce is safe: every key is fresh and used for exactly one stream.
        self._encryptor = Cipher(algorithms.AES(bytes(key)), modes.CTR(bytes(16))).encryptor()
        self.drawn_bytes = 0

    def __repr__(self) -> str:
        return f"KeyStream(<key hidden>, drawn={self.drawn_bytes} B)"

    def __getstate__(self) -> None:
        raise TypeError("a KeyStream holds a secret key and cannot be pickled")

    def raw(self, n_bytes: int) -> bytes:
        """The next ``n_bytes`` bytes of keystream."""
        self.drawn_bytes += n_bytes
        return self._encryptor.update(bytes(n_bytes))

    def ring(self, shape: Sequence[int]) -> torch.Tensor:
        """Uniform int64 of ``shape`` (every 64-bit pattern equally likely)."""
        n = _numel(shape)
        data = np.frombuffer(self.raw(8 * n), dtype="<i8").copy()
        return torch.from_numpy(data).reshape(tuple(shape))

    def bits(self, shape: Sequence[int], *, bitlength: int) -> torch.Tensor:
        """Uniform int64 in [0, 2^bitlength) of ``shape``; 64 bits means :meth:`ring`."""
        if bitlength >= 64:
            return self.ring(shape)
        if bitlength <= 8:  # one keystream byte per value is enough
            n = _numel(shape)
            data = np.frombuffer(self.raw(n), dtype=np.uint8).astype(np.int64)
            return torch.from_numpy(data & ((1 << bitlength) - 1)).reshape(tuple(shape))
        return self.ring(shape) & ((1 << bitlength) - 1)


def csprng_ring(shape: Sequence[int]) -> torch.Tensor:
    """Uniform int64 of ``shape`` straight from ``os.urandom`` (values only this process draws)."""
    n = _numel(shape)
    return torch.from_numpy(np.frombuffer(os.urandom(8 * n), dtype="<i8").copy()).reshape(tuple(shape))
