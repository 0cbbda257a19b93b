"""Helpers of the hybrid-step privacy tests: a recording wrapper around ``HybridTrainStep``.

:class:`RecordingHybridSteps` is a party program (run by every party process). For each of
party 0's alternative secret batches it runs one full hybrid DP step (a fresh ``step_id`` and
fresh conversion rounds each time) and keeps, in the party's own process:

* ``opened``: on the observer only, every value it learns from its peers' MPC messages (the
  transport's :class:`ViewRecorder`: the opened value of each arithmetic/binary opening and
  every received tensor), up to but excluding the opening of the noised gradient sums (those
  are the step's DP release, and differ between batches by design);
* ``k_shares`` / ``e_shares``: on every party, the int64 HE->SS shares it fetched from K and
  from E, per round (so that the test, which plays an all-seeing auditor, can rebuild what K
  decrypted: the sum of K's shares is ``v + R``);
* ``leak_unmasked`` / ``leak_weak``: the positive controls, recorded separately after the
  step: party 0 opens its own secret images unmasked, and masked only by uniform noise in
  [-1, 1) (a planted leak). The test adds them to the honest transcript to show the
  statistic catches a leak of that size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import torch

from ppml_hybrid.protocols.hybrid_train_step import HybridPartyInputs, HybridTrainStep
from ppml_hybrid.smpc_stage.transport import ViewRecorder


@dataclass(frozen=True)
class RecordingInputs:
    credential: Any
    batches: Tuple[Tuple[str, Any], ...]  # (label, PartyRows) in run order


@dataclass(frozen=True)
class RecordingHybridSteps:
    step: HybridTrainStep  # step_id / first_round of the first batch; later batches follow on
    observer: int = 1

    def __call__(self, ctx: Any, inputs: RecordingInputs) -> Dict[str, Any]:
        from ppml_hybrid.he_stage.evaluator.party import PartyConversionClient
        from ppml_hybrid.he_stage.shares import sum_shares
        from ppml_hybrid.protocols import dp_step

        torch.set_num_threads(1)
        fetched: List[Tuple[int, str, np.ndarray, np.ndarray]] = []

        def receive(client: Any, *, round: Any) -> np.ndarray:  # PartyConversionClient.receive, recorded
            from_k = client._key.fetch_share(round_id=round.round_id)
            from_e = client._evaluator.fetch_mask_share(round_id=round.round_id)
            assert from_k.round == round and from_e.round == round
            fetched.append((round.round_id, round.kind, np.array(from_k.share), np.array(from_e.share)))
            return sum_shares(from_k.share, from_e.share)

        original_noise = dp_step.add_noise_share

        def noise_then_stop_recording(raw: Any, *, std: float, scale_bits: int) -> Any:
            ctx.transport.recorder = None  # what follows is the opening of the noised sums (the DP release)
            return original_noise(raw, std=std, scale_bits=scale_bits)

        PartyConversionClient.receive = receive  # this party process only
        dp_step.add_noise_share = noise_then_stop_recording

        out: Dict[str, Any] = {}
        per_step = self.step.rounds_per_step()
        for i, (label, rows) in enumerate(inputs.batches):
            program = dataclasses.replace(self.step, step_id=self.step.step_id + i,
                                          first_round=self.step.first_round + i * per_step)
            fetched.clear()
            recorder = ViewRecorder()
            if ctx.rank == self.observer:
                ctx.transport.recorder = recorder
            result = program(ctx, HybridPartyInputs(rows=rows, credential=inputs.credential))
            ctx.transport.recorder = None
            leaks = {}
            for name, plant in (("leak_unmasked", 0.0), ("leak_weak", 1.0)):
                leak = ViewRecorder()
                if ctx.rank == self.observer:
                    ctx.transport.recorder = leak
                x = ctx.share(rows.images if ctx.rank == 0 else None, src=0)  # party 0's secret images
                noise = torch.empty(tuple(x.size())).uniform_(-plant, plant) if plant else torch.zeros(tuple(x.size()))
                mask = ctx.share(noise if ctx.rank == 0 else None, src=0)
                (x + mask).get_plain_text()
                ctx.transport.recorder = None
                leaks[name] = leak.take()
            out[label] = {
                "opened": recorder.take() if ctx.rank == self.observer else None,
                "k_shares": [(r, k, s) for r, k, s, _ in fetched],
                "e_shares": [(r, k, s) for r, k, _, s in fetched],
                "noised_sums": dict(result.noised_sums),
                "batch_size": result.batch_size,
                **(leaks if ctx.rank == self.observer else {}),
            }
        return out


def byte_pvalues(a: np.ndarray, b: np.ndarray) -> List[float]:
    """Chi-square homogeneity p-value per byte position of two int64 samples (same length used)."""
    from scipy.stats import chi2_contingency

    n = min(a.size, b.size)
    a = np.ascontiguousarray(a.reshape(-1)[:n]).view(np.uint64)
    b = np.ascontiguousarray(b.reshape(-1)[:n]).view(np.uint64)
    out = []
    for byte in range(8):
        ha = np.bincount(((a >> np.uint64(8 * byte)) & np.uint64(255)).astype(np.int64), minlength=256)
        hb = np.bincount(((b >> np.uint64(8 * byte)) & np.uint64(255)).astype(np.int64), minlength=256)
        keep = (ha + hb) > 0
        out.append(1.0 if keep.sum() < 2 else float(chi2_contingency(np.stack([ha[keep], hb[keep]]))[1]))
    return out


def as_int64(t: Any) -> np.ndarray:
    return (t.numpy() if torch.is_tensor(t) else np.asarray(t)).astype(np.int64).reshape(-1)


def sum_mod(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """Sum of int64 arrays mod 2^64 (two's complement wrap)."""
    acc = np.zeros_like(arrays[0], dtype=np.uint64)
    for a in arrays:
        acc = acc + np.asarray(a, dtype=np.int64).view(np.uint64)
    return acc.view(np.int64)


BLOCK = 8192


def blockwise_min_p(a: np.ndarray, b: np.ndarray, *, block: int = BLOCK) -> float:
    """Bonferroni-corrected smallest per-byte chi-square p-value over position-aligned blocks.

    The message schedule of a step depends only on public shapes, so value ``i`` of both
    transcripts comes from the same message: comparing block by block keeps the test's power
    against a leak confined to a few messages (a whole-transcript histogram would dilute it).
    """
    n = min(a.size, b.size)
    ps = []
    for lo in range(0, n, block):
        hi = min(n, lo + block)
        if hi - lo < 1024:  # too few for 256 bins: join the tail to the previous block
            lo = max(0, hi - block)
        ps += byte_pvalues(a[lo:hi], b[lo:hi])
    return min(1.0, min(ps) * len(ps))
