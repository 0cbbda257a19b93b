"""CrypTen fixed point and additive sharing in Z_2^64, for the HE->SS conversion.

CrypTen encodes a real x as the int64 ``round(x * 2^16)`` and shares it additively mod 2^64.
K shares the decrypted ``v + R``, E shares ``-R`` (R a multiple of 2^-16, so its encoding is
exact); the parties' shares of both sum to the encoding of ``v`` (design section 6).

Randomness comes from the OS CSPRNG (``os.urandom``) only. Values and shares are never logged.
"""

from __future__ import annotations

import os

import numpy as np

from ppml_hybrid.he_stage.errors import HEError

FRACTION_BITS = 16
SCALE = float(1 << FRACTION_BITS)


def encode_fixed_point(*, values: np.ndarray) -> np.ndarray:
    """Real values -> CrypTen fixed point (int64, 16 fractional bits)."""
    x = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(x)) or (x.size and float(np.abs(x).max()) >= 2.0 ** (62 - FRACTION_BITS)):
        raise HEError("values to encode must be finite and below 2^46 in magnitude")
    return np.rint(x * SCALE).astype(np.int64)


def decode_fixed_point(*, encoded: np.ndarray) -> np.ndarray:
    return np.asarray(encoded, dtype=np.int64).astype(np.float64) / SCALE


def random_uint64(*, shape: tuple) -> np.ndarray:
    """Uniform uint64 values from the OS CSPRNG."""
    n = int(np.prod(shape))
    return np.frombuffer(os.urandom(8 * n), dtype="<u8").reshape(shape).astype(np.uint64)


def split_additive(*, encoded: np.ndarray, parties: int) -> list:
    """``parties`` int64 arrays, uniformly random but for their sum mod 2^64 = ``encoded``."""
    if parties < 2:
        raise HEError(f"additive sharing needs at least 2 parties; got {parties}")
    secret = np.asarray(encoded, dtype=np.int64).view(np.uint64)
    shares = [random_uint64(shape=secret.shape) for _ in range(parties - 1)]
    last = secret.copy()
    for s in shares:
        last -= s  # wraps mod 2^64
    shares.append(last)
    return [s.view(np.int64) for s in shares]


def sum_shares(*shares: np.ndarray) -> np.ndarray:
    """Sum mod 2^64 (what the MPC's reconstruction does), as int64."""
    total = np.zeros(np.asarray(shares[0]).shape, dtype=np.uint64)
    for s in shares:
        total += np.asarray(s, dtype=np.int64).view(np.uint64)
    return total.view(np.int64)


def uniform_mask_int(*, bits: int, shape: tuple) -> np.ndarray:
    """Fixed-point masks ``r`` uniform in [-2^(bits+16), 2^(bits+16)), as int64 (R = r / 2^16).

    Drawn from the OS CSPRNG, reduced mod a power of two (no bias).
    """
    width = bits + FRACTION_BITS + 1
    if not 1 <= width <= 52:
        raise HEError(f"mask_bits must keep the fixed-point mask within 52 bits (exact in float64); got {bits}")
    u = random_uint64(shape=shape) & np.uint64((1 << width) - 1)
    return u.astype(np.int64) - (1 << (width - 1))
