"""Mersenne Twister state recovery (test aid for the dealer-randomness attack).

torch's CPU generator is MT19937; ``torch.randint(-2**63, 2**63 - 1, ...)`` returns, per value,
two consecutive 32-bit outputs (first << 32 | second) minus 2^63. 624 consecutive outputs,
untempered, continue the sequence through the MT recurrence
x[k+624] = x[k+397] ^ A((x[k] & UPPER) | (x[k+1] & LOWER)), whatever the block alignment.
"""

from __future__ import annotations

from typing import Iterable, List

N, M = 624, 397
UPPER, LOWER, MATRIX = 0x80000000, 0x7FFFFFFF, 0x9908B0DF


def temper(y: int) -> int:
    y ^= y >> 11
    y ^= (y << 7) & 0x9D2C5680
    y ^= (y << 15) & 0xEFC60000
    y ^= y >> 18
    return y & 0xFFFFFFFF


def untemper(y: int) -> int:
    y ^= y >> 18
    y ^= (y << 15) & 0xEFC60000
    x = y
    for _ in range(5):
        x = y ^ ((x << 7) & 0x9D2C5680)
    y = x & 0xFFFFFFFF
    x = y
    for _ in range(3):
        x = y ^ (x >> 11)
    return x & 0xFFFFFFFF


def outputs_from_ring(values: Iterable[int]) -> List[int]:
    """32-bit outputs behind int64 ring elements drawn by torch.randint(-2**63, 2**63 - 1)."""
    out = []
    for v in values:
        u = (int(v) + 2**63) % 2**64
        out += [u >> 32, u & 0xFFFFFFFF]
    return out


class TwisterClone:
    """Predicts the outputs that follow 624 observed consecutive ones."""

    def __init__(self, observed: List[int]) -> None:
        if len(observed) < N:
            raise ValueError(f"need {N} consecutive outputs, got {len(observed)}")
        self._x = [untemper(y) for y in observed[-N:]]

    def next(self) -> int:
        x = self._x
        y = (x[0] & UPPER) | (x[1] & LOWER)
        new = x[M] ^ (y >> 1) ^ (MATRIX if y & 1 else 0)
        self._x = x[1:] + [new]
        return temper(new)

    def ring(self, n: int) -> List[int]:
        """The next ``n`` int64 values torch.randint(-2**63, 2**63 - 1) would draw."""
        out = []
        for _ in range(n):
            u = (self.next() << 32) | self.next()
            out.append(u - 2**63)
        return out
