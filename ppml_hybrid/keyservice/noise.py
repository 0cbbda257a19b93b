"""K's DP noise (``dp.noise_source: enclave``): one exact discrete Gaussian draw per step, split
into uniform additive shares, each delivered once to its own party, then forgotten.

Protocol, per training step ``s`` (who learns what):

1. Request. Party P_j asks for its share of step ``s``'s noise over its own mutually
   authenticated channel (its certificate decides which share; the request names no party),
   with the step's layout: every released gradient sum's name, element count and fixed-point
   scale ``2^b``, and the noise multiplier sigma and clip C of P_j's own plan. Each party's steps
   go up: a step at or below one it already fetched is a REPLAY.
2. Draw. The first request of step ``s`` fixes its layout; every other party must name the same
   (else MISMATCH: a corrupted party cannot shrink the noise an honest party relies on; the
   honest party is refused its share, so the step is never opened). With that first request K
   draws ``N_k ~ N_Z(0, (sigma C 2^b_k)^2)`` for every element, an EXACT discrete Gaussian on
   the sum's own fixed-point lattice (OpenDP's CKS20 sampler over OpenSSL's CSPRNG; noise on a
   coarser lattice than the sum would reveal the sum's low bits), and splits N into
   ``r_1 + ... + r_n = N (mod 2^64)``, ``r_1..r_{n-1}`` uniform from ``os.urandom``.
3. Deliver. P_j receives ``r_j`` once; K drops it as it is sent and the step is forgotten when
   all n shares are out. A step is never drawn twice: a coordinator that replays a step cannot
   average fresh noise away.

K learns the layout (public) and holds the noise only between the draw and the last delivery; it
never logs or writes it. Each party learns only its own ``r_j``, uniform and independent of N.
The parties add their shares to their shares of the clipped sums before the step's only opening,
which reveals ``sum + N``.
"""

from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass, field
from typing import Dict, Optional, Set, Tuple

import numpy as np

from ppml_hybrid.errors import ConfigError
from ppml_hybrid.keyservice.rounds import RequestQuota
from ppml_hybrid.rpc.keyservice_errors import AnnouncementMismatchError, RoundReplayError, TooManyOpenRoundsError
from ppml_hybrid.rpc.messages import NoiseRequest

SAMPLER = "opendp-0.16.0 make_gaussian on i64 (CKS20 discrete Gaussian, OpenSSL RAND_bytes)"


def lattice_scale(*, noise_multiplier: float, max_grad_norm: float, scale_bits: int) -> float:
    """The noise's standard deviation in units of 2^-scale_bits: sigma C 2^b, rounded up (never less)."""
    return math.nextafter(noise_multiplier * max_grad_norm, math.inf) * 2.0 ** scale_bits


def discrete_gaussian(count: int, *, scale: float) -> np.ndarray:
    """``count`` independent draws of the discrete Gaussian N_Z(0, scale^2), as int64.

    Exact (Canonne, Kamath, Steinke 2020, as OpenDP implements it, with the float scale taken as
    the exact rational it is), from OpenSSL's CSPRNG in this process. Not a rounded float Gaussian.
    """
    # the submodules, not opendp.prelude: that one also imports pandas and scikit-learn, which K's
    # enclave image does not carry
    from opendp.domains import atom_domain, vector_domain
    from opendp.measurements import make_gaussian
    from opendp.metrics import l2_distance
    from opendp.mod import enable_features

    if count == 0:
        return np.zeros(0, dtype=np.int64)
    enable_features("contrib")  # OpenDP's flag for mechanisms outside its vetted set
    measurement = make_gaussian(vector_domain(atom_domain(T="i64")), l2_distance(T="i64"), scale=float(scale))
    return np.asarray(measurement([0] * count), dtype=np.int64)


def additive_shares(value: np.ndarray, parties: int) -> list:
    """``parties`` int64 arrays summing to ``value`` mod 2^64, all but the last uniform (os.urandom)."""
    shares = [np.frombuffer(os.urandom(8 * value.size), dtype="<i8").astype(np.int64).reshape(value.shape)
              for _ in range(parties - 1)]
    last = value.astype(np.uint64)
    for s in shares:
        last = last - s.astype(np.uint64)  # wraps mod 2^64
    return shares + [last.astype(np.int64)]


@dataclass
class _Draw:
    request: NoiseRequest
    shares: Dict[int, np.ndarray] = field(default_factory=dict)  # party -> its share, until delivered


class NoiseBook:
    """Thread-safe per-step noise state of one K process (module doc, steps 1-3)."""

    def __init__(self, *, parties: int, request_quota: int, max_open_steps: int) -> None:
        if parties < 2 or request_quota < 1 or max_open_steps < 1:
            raise ConfigError("K's noise needs parties >= 2, a quota >= 1 and max_open_steps >= 1")
        self._parties = parties
        self._quota = RequestQuota(request_quota)
        self._max_open = max_open_steps
        self._lock = threading.Lock()
        self._draws: Dict[int, _Draw] = {}
        self._last: Dict[int, int] = {}  # party -> highest step it fetched
        self._drawn: Set[int] = set()  # step ids ever drawn (ids only: never the noise)

    def fetch(self, *, party: int, request: NoiseRequest) -> np.ndarray:
        """Party ``party``'s share of step ``request.step``'s noise (drawn on the step's first request)."""
        step = request.step
        with self._lock:
            self._quota.charge(f"party {party}", step, what=f"step {step}'s noise")
            if step <= self._last.get(party, -1):
                raise RoundReplayError(f"party {party} already fetched the noise of step {self._last[party]}; steps "
                                       f"go up and each is drawn once (asked for step {step})")
            draw = self._draws.get(step)
            if draw is None:
                if step in self._drawn:
                    raise RoundReplayError(f"the noise of step {step} was drawn and delivered; it is never drawn again")
                if len(self._draws) >= self._max_open:
                    raise TooManyOpenRoundsError(f"{len(self._draws)} steps' noise are not yet fetched by every "
                                                 f"party; step {step} must wait")
                noise = np.concatenate([discrete_gaussian(slot.count, scale=lattice_scale(
                    noise_multiplier=request.noise_multiplier, max_grad_norm=request.max_grad_norm,
                    scale_bits=slot.scale_bits)) for slot in request.slots]) if request.slots else \
                    np.zeros(0, dtype=np.int64)
                parts = additive_shares(noise, self._parties)
                del noise
                draw = self._draws[step] = _Draw(request=request, shares={j + 1: s for j, s in enumerate(parts)})
                self._drawn.add(step)
            elif draw.request != request:
                raise AnnouncementMismatchError(
                    f"party {party} asked for step {step}'s noise with another layout or noise multiplier than a "
                    f"peer did ({_describe(request)} vs {_describe(draw.request)}); refused")
            share = draw.shares.pop(party, None)
            if share is None:  # pragma: no cover - the step order above already refuses this
                raise RoundReplayError(f"party {party}'s share of step {step}'s noise was already delivered")
            self._last[party] = step
            if not draw.shares:
                del self._draws[step]
                self._quota.forget(step)
            return share

    def held_steps(self) -> Tuple[int, ...]:
        """Steps whose noise shares K still holds (waiting for a party to fetch its own)."""
        with self._lock:
            return tuple(sorted(self._draws))


def _describe(request: Optional[NoiseRequest]) -> str:
    if request is None:
        return "none"
    return (f"sigma {request.noise_multiplier}, C {request.max_grad_norm}, "
            f"{len(request.slots)} sums of {sum(s.count for s in request.slots)} values")
