"""CrypTen fixed point and additive sharing in Z_2^64, for the HE->SS conversion.

CrypTen encodes a real x as the int64 ``round(x * 2^16)`` and shares it additively mod 2^64.
K shares ``round((v + R) 2^16)``, E shares ``-round(R 2^16)`` (both mod 2^64: a mask may be
wider than 2^47); the parties' shares of both sum to ``round(v 2^16)`` within one unit plus the
decoding error (design section 6). R is real-valued at double resolution, far finer than
2^-16, so ``v + R`` hides v itself, not only its 2^-16 grid cell.

Randomness comes from the OS CSPRNG (``os.urandom``) only. Values and shares are never logged.
"""

from __future__ import annotations

import os

import numpy as np

from ppml_hybrid.config import FIXED_POINT_BITS
from ppml_hybrid.he_stage.errors import HEError

FRACTION_BITS = FIXED_POINT_BITS
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


def encode_fixed_point_mod(*, values: np.ndarray) -> np.ndarray:
    """Real values -> ``round(x * 2^16) mod 2^64`` as int64, exactly, for any finite magnitude.

    Scaling by 2^16 and rounding are exact in float64; above 2^62 the value is an integer-valued
    double and ``fmod`` by 2^64 is exact, so the two's-complement result is the exact residue.
    """
    x = np.asarray(values, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise HEError("values to encode must be finite")
    r = np.rint(x * SCALE)
    r = np.fmod(r, 2.0 ** 64)
    r = np.where(r >= 2.0 ** 63, r - 2.0 ** 64, np.where(r < -(2.0 ** 63), r + 2.0 ** 64, r))
    out = np.empty(r.shape, dtype=np.int64)
    small = np.abs(r) < 2.0 ** 62
    out[small] = r[small].astype(np.int64)
    big = ~small  # |r| in [2^62, 2^63]: integer-valued doubles, exact through Python ints
    if big.any():
        out[big] = np.array([int(v) if v < 2.0 ** 63 else int(v) - 2**64 for v in r[big]], dtype=np.int64)
    return out


def real_mask(*, bits: int, shape: tuple) -> np.ndarray:
    """Fresh masks R uniform on [-2^bits, 2^bits) at double resolution (float64), from the OS CSPRNG.

    A uniform 64-bit integer scaled by 2^(bits - 63): every double the range holds near |R| is
    reachable, so R has no grid coarser than the decoder's own resolution.
    """
    if not 1 <= bits <= 60:
        raise HEError(f"mask width must be 2^1 .. 2^60; got 2^{bits}")
    u = random_uint64(shape=shape).view(np.int64)
    return u.astype(np.float64) * 2.0 ** (bits - 63)


# CKKS slot decoding works in doubles: with a mask of width 2^B in the ciphertext, the decrypted
# values carry an absolute error of about 2^(B - 48) (measured for rings 2^11 and 2^14 at scale
# 2^50, B = 20..52: tests/he_service and benchmarks/he_to_ss_precision.py).
DECODE_PRECISION_BITS = 48


def conversion_error_bound(*, mask_bits: int) -> float:
    """What HE->SS may add to a value (real units) with a mask of width 2^mask_bits: twice the
    measured decoding error, plus the two fixed-point roundings."""
    return 2.0 ** (mask_bits - DECODE_PRECISION_BITS + 1) + 2.0 / SCALE
