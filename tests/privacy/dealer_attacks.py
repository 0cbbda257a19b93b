"""Party programs that attack the MPC's correlated randomness (finding 1 of the privacy review).

Party 0 holds a secret vector; party 1 (the attacker, semi-honest: it runs the protocol
faithfully and only computes on what it sees) tries to recover it from one Beaver opening
``eps = x - a`` of a product with party 0's secret. It knows its own share a_1 of the triple
(it drew it); it needs a_0, which party 0 drew from the stream it shares with the dealer.

* :class:`SeedPrediction`: with CrypTen's TTP the dealer draws party 0's seed with
  ``torch.randint`` on torch's default generator; dealer and parties fork from one server,
  so party 1 replays the dealer's draws from its own default generator state.
* :class:`TwisterRecovery`: party 1 first multiplies two vectors of its own (zeros), so the
  openings give it a and b, hence party 0's stream outputs a_0 || b_0 (624 32-bit outputs of
  a Mersenne Twister); it recovers the state and predicts the a_0 of the next triple.

Each returns party 1's reconstruction of party 0's secret (fixed point, decoded); the test
compares it with the truth. Against AES-CTR streams both reconstructions are noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List

import torch

from mt19937 import TwisterClone, outputs_from_ring
from ppml_hybrid.smpc_stage.transport import ViewRecorder

SCALE = 2.0 ** 16
RING = -(2**63), 2**63 - 1


def _record_own_triples(crypten: Any) -> List[Any]:
    """Wrap this process's provider so the triples it hands out (its own shares) are kept."""
    provider = crypten.mpc.get_default_provider()
    original = provider.generate_additive_triple
    kept: List[Any] = []

    def recording(*args: Any, **kwargs: Any) -> Any:
        a, b, c = original(*args, **kwargs)
        kept.append((a.share.clone(), b.share.clone()))
        return a, b, c

    provider.generate_additive_triple = recording
    return kept


def _decode(ring: torch.Tensor) -> List[float]:
    return (ring.double() / SCALE).tolist()


@dataclass(frozen=True)
class SeedPrediction:
    n: int

    def __call__(self, ctx: Any, secret: torch.Tensor) -> Any:
        crypten = ctx.crypten
        # Party 1 replays what the dealer's torch.randint calls would draw (its own default generator,
        # untouched since the fork): seeds[0] would be party 0's triple seed.
        g = torch.Generator()
        g.set_state(torch.get_rng_state())
        predicted_seed = int(torch.randint(*RING, size=(), generator=g))
        kept = _record_own_triples(crypten)
        x = ctx.share(secret if ctx.rank == 0 else None, src=0)
        y = ctx.share(torch.ones(self.n) if ctx.rank == 1 else None, src=1)
        recorder = ViewRecorder()
        ctx.transport.recorder = recorder
        (x * y).get_plain_text()
        ctx.transport.recorder = None
        if ctx.rank != 1:
            return None
        eps = recorder.take()[: self.n]
        g0 = torch.Generator()
        g0.manual_seed(predicted_seed)
        a0 = torch.randint(*RING, size=(self.n,), generator=g0)
        return _decode(eps + a0 + kept[0][0])


@dataclass(frozen=True)
class TwisterRecovery:
    n: int
    observe: int = 156  # 2 x 156 int64 values = 624 32-bit outputs of party 0's stream

    def __call__(self, ctx: Any, secret: torch.Tensor) -> Any:
        crypten = ctx.crypten
        kept = _record_own_triples(crypten)
        mine = torch.zeros(self.observe)
        p = ctx.share(mine if ctx.rank == 1 else None, src=1)
        q = ctx.share(mine if ctx.rank == 1 else None, src=1)
        recorder = ViewRecorder()
        ctx.transport.recorder = recorder
        (p * q).get_plain_text()  # party 1's own product: eps = 0 - a, delta = 0 - b
        opened = recorder.take()
        x = ctx.share(secret if ctx.rank == 0 else None, src=0)
        w = ctx.share(torch.ones(self.n) if ctx.rank == 1 else None, src=1)
        ctx.transport.recorder = recorder
        (x * w).get_plain_text()
        ctx.transport.recorder = None
        if ctx.rank != 1:
            return None
        eps_p, delta_q = opened[: self.observe], opened[self.observe: 2 * self.observe]
        a1, b1 = kept[0]
        a0 = -eps_p - a1  # a = -eps (p = 0), a_0 = a - a_1 (mod 2^64)
        b0 = -delta_q - b1
        clone = TwisterClone(outputs_from_ring(a0.tolist() + b0.tolist()))
        next_a0 = torch.tensor(clone.ring(self.n), dtype=torch.long)
        eps_x = recorder.take()[: self.n]
        return _decode(eps_x + next_a0 + kept[1][0])
