"""Many transcripts of a real all-MPC DP step, and the distinguisher that tries to tell batches apart.

:class:`StepTranscripts` runs, in every party process, ``n`` DP steps (``MPCTrainStep`` of a
small model, the whole rows as the batch so every step has the same public shape) alternating
party 0's rows between batch A and batch B; party 1 (the observer) records every value it
learns from its peer's messages up to, not including, the opening of the noised sums (the DP
release). A plant (``hybrid_harness``) changes the real DP-step code in every party process.

:func:`distinguisher_auc` is the attacker: on a training half of the transcripts it picks the
16 features (per position: a signed log-magnitude of the opened ring element and its low 16 bits)
whose means differ most between A and B (Welch t), standardizes them, fits a logistic regression
on them, and reports its ROC AUC on the held-out half; the mean over 5 random halvings (the
spread of a single halving on 100 pure-noise transcripts is about 0.08, of the mean 0.045). Against uniformly random openings it is at chance;
against an opened fixed-point value (small magnitude, data-dependent) it separates the batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from hybrid_harness import _install_party_plant
from ppml_hybrid.config import BlockConfig, ModelConfig, PolyConfig
from ppml_hybrid.smpc_stage.transport import ViewRecorder

# Small on purpose (a step costs about a second of rounds): dense and polynomial sites, the
# kinds whose per-sample pieces the DP step builds from layer inputs and deltas.
MODEL = ModelConfig(
    name="tiny",
    blocks=(
        BlockConfig(type="dense", out=4, activation="poly"),
        BlockConfig(type="dense", out=2, activation="none"),
    ),
    poly=PolyConfig(a=0.05, b=1.0),
)
IMAGE = 4
ROWS = 2


@dataclass(frozen=True)
class StepTranscripts:
    state_dict: Any
    n: int
    plant: Optional[str] = None
    observer: int = 1

    def __call__(self, ctx: Any, batches: Sequence[Any]) -> Optional[List[Tuple[int, np.ndarray]]]:
        from ppml_hybrid.protocols import dp_noise, dp_step
        from ppml_hybrid.protocols.dp_step import DPStepParams
        from ppml_hybrid.protocols.mpc_train_step import MPCTrainStep

        torch.set_num_threads(1)
        saved = [(dp_step, n, getattr(dp_step, n)) for n in ("add_noise_shares", "checked_factors")]
        saved.append((dp_noise, "csprng_normal", dp_noise.csprng_normal))
        try:
            _install_party_plant(self.plant, ctx)
            add = dp_step.add_noise_shares

            def stop_at_release(raws: Any, scale_bits: Any, **kwargs: Any) -> Any:
                out = add(raws, scale_bits, **kwargs)
                ctx.transport.recorder = None  # next: the opening of the noised sums (the DP release)
                return out

            dp_step.add_noise_shares = stop_at_release
            dp = DPStepParams(max_grad_norm=1.0, noise_multiplier=1.0, parties=ctx.parties)
            step = MPCTrainStep(model=MODEL, state_dict=self.state_dict, image_size=IMAGE, sample_rate=1.0, dp=dp)
            out = []
            for i in range(self.n):
                label = i % 2
                recorder = ViewRecorder()
                if ctx.rank == self.observer:
                    ctx.transport.recorder = recorder
                step(ctx, batches[label])
                ctx.transport.recorder = None
                out.append((label, recorder.take().numpy()))
            return out if ctx.rank == self.observer else None
        finally:
            for owner, name, value in saved:
                setattr(owner, name, value)


def features(opened: np.ndarray) -> np.ndarray:
    """Per opened ring element: sign(x) log2(1 + |x|) / 64 and (x mod 2^16) / 2^16."""
    x = opened.astype(np.int64)
    mag = np.log2(1.0 + np.abs(x.astype(np.float64))) / 64.0
    return np.concatenate([np.sign(x) * mag, (x & 0xFFFF).astype(np.float64) / 65536.0])


def distinguisher_auc(transcripts: Sequence[Tuple[int, np.ndarray]], *, top: int = 16, splits: int = 5) -> float:
    """Held-out ROC AUC of the distinguisher (module doc) on labelled transcripts, mean over halvings."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    length = min(len(t) for _, t in transcripts)
    X = np.stack([features(t[:length]) for _, t in transcripts])
    y = np.array([label for label, _ in transcripts])
    aucs = []
    for seed in range(splits):
        order = np.random.default_rng(seed).permutation(len(y))
        train, test = order[: len(y) // 2], order[len(y) // 2:]
        a, b = X[train][y[train] == 0], X[train][y[train] == 1]
        t = np.abs(a.mean(0) - b.mean(0)) / np.sqrt(a.var(0) / len(a) + b.var(0) / len(b) + 1e-12)
        pick = np.argsort(t)[-top:]
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X[train][:, pick], y[train])
        aucs.append(roc_auc_score(y[test], model.predict_proba(X[test][:, pick])[:, 1]))
    return float(np.mean(aucs))
