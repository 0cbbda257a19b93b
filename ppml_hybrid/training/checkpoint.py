"""Checkpoints of a run, and ``train.resume=RUN_DIR``.

A checkpoint (``checkpoint.pt`` in the run's output folder, written atomically after every
epoch and when the run is interrupted) holds what the process that trains already holds in
the clear: the public (DP-released) weights, the optimiser's state (momentum of released
updates), the position in the schedule, the accountant's history and the epochs' public
metrics, plus the run digest and the digest-relevant config so a resume with other settings
is refused with the keys that differ. In encrypted modes it is the coordinator's: no scan, no
share and no key is in it; every party keeps its own privacy ledger, which is what epsilon
continues from (``training/ledger.py``).

The file is read with ``torch.load(weights_only=True)``: a checkpoint from elsewhere cannot run
code here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ppml_hybrid.config import RunConfig, run_digest, digest_fields
from ppml_hybrid.errors import ConfigError

CHECKPOINT_FILE = "checkpoint.pt"
FORMAT = 1


class CheckpointError(ConfigError):
    """A checkpoint that cannot be resumed (missing, unreadable, or another run's)."""


@dataclass(frozen=True)
class Checkpoint:
    """A run's state after ``step`` optimiser steps (module doc)."""

    run_digest: str
    config: Dict[str, Any]  # the digest-relevant config (names the differing keys on refusal)
    mode: str
    step: int
    epochs: Tuple[Dict[str, Any], ...]  # the completed epochs' records, as metrics.json writes them
    model: Dict[str, torch.Tensor]
    optimizer: Dict[str, Any]
    schedule: Dict[str, Any]
    accountant_history: Tuple[Tuple[float, float, int], ...] = ()
    data: Dict[str, Any] = field(default_factory=dict)  # plaintext: data digest; encrypted: sites' row counts
    ledger_dir: Optional[str] = None  # one-machine encrypted runs: where the parties' ledgers live
    baseline_loss: Optional[float] = None  # the divergence check's reference (training/checks.py)
    reason: str = "epoch"  # "epoch" or "interrupted"


def checkpoint_of(cfg: RunConfig, *, step: int, epochs: Sequence[Dict[str, Any]], model: torch.nn.Module,
                  optimizer: Any, schedule: Any, accountant: Any, data: Dict[str, Any],
                  baseline_loss: Optional[float], reason: str, ledger_dir: Optional[str] = None) -> Checkpoint:
    """The run's state after ``step`` steps, from the live objects of either training loop (an
    Opacus ``DPOptimizer`` is saved as the optimiser it wraps)."""
    return Checkpoint(
        run_digest=run_digest(cfg), config=digest_fields(cfg), mode=cfg.mode, step=step, epochs=tuple(epochs),
        model={k: v.detach().clone() for k, v in model.state_dict().items()},
        optimizer=getattr(optimizer, "original_optimizer", optimizer).state_dict(),
        schedule=schedule_position(schedule),
        accountant_history=history_of(accountant) if accountant is not None else (),
        data=data, ledger_dir=ledger_dir, baseline_loss=baseline_loss, reason=reason)


def save_checkpoint(out_dir: Optional[str], ckpt: Checkpoint) -> Optional[Path]:
    """Write ``ckpt`` to ``out_dir/checkpoint.pt`` atomically (a crash mid-write keeps the last one)."""
    if out_dir is None:
        return None
    path = Path(out_dir) / CHECKPOINT_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".pt.tmp")
    raw = dataclasses.asdict(ckpt)
    raw["epochs"] = [dict(e) for e in ckpt.epochs]
    raw["accountant_history"] = [list(h) for h in ckpt.accountant_history]
    raw["format"] = FORMAT
    torch.save(raw, tmp)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)
    return path


def load_checkpoint(run_dir: str, cfg: RunConfig) -> Checkpoint:
    """The checkpoint of ``run_dir`` if it belongs to a run with ``cfg``'s settings, else a
    :class:`CheckpointError` naming what differs."""
    path = Path(run_dir) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"train.resume={run_dir}: no {CHECKPOINT_FILE} there (a run writes one after each "
                              "epoch and when it is interrupted)")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
        if raw.pop("format") != FORMAT:
            raise ValueError("another checkpoint format")
        raw["epochs"] = tuple(raw["epochs"])
        raw["accountant_history"] = tuple((float(s), float(q), int(n)) for s, q, n in raw["accountant_history"])
        ckpt = Checkpoint(**raw)
    except Exception as exc:  # unreadable or not ours: one clear error, nothing run
        raise CheckpointError(f"train.resume={run_dir}: {path} is not a checkpoint of this project "
                              f"({type(exc).__name__})") from None
    if ckpt.mode != cfg.mode or ckpt.run_digest != run_digest(cfg):
        diff = _differences(ckpt.config, digest_fields(cfg))
        if ckpt.mode != cfg.mode:
            diff = [f"mode ({ckpt.mode} there, {cfg.mode} here)", *diff]
        raise CheckpointError(f"train.resume={run_dir}: that run had other settings: {', '.join(diff) or 'config'}. "
                              "A resume must use the very same model, data, DP and schedule settings (its privacy "
                              "accounting continues); start a new run to change them")
    return ckpt


def check_same_data(ckpt: Checkpoint, data: Dict[str, Any], *, run_dir: str) -> None:
    """Refuse a resume over other data (plaintext: the training rows' digest; encrypted: the
    sites' training-row counts, while each party checks its own rows against its ledger)."""
    for key, value in data.items():
        if key in ckpt.data and ckpt.data[key] != value:
            raise CheckpointError(f"train.resume={run_dir}: the training data changed ({key}: "
                                  f"{_short(ckpt.data[key])} then, {_short(value)} now); a resume must train on "
                                  "the same rows")


def data_digest(images: torch.Tensor, labels: torch.Tensor) -> str:
    """SHA-256 of training rows (kept where the rows are; never sent)."""
    h = hashlib.sha256()
    h.update(images.detach().contiguous().cpu().numpy().tobytes())
    h.update(labels.detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()


def resume_position(ckpt: Optional[Checkpoint]) -> Tuple[int, int]:
    """(first epoch to run, steps already done): an epoch whose evaluation did not run (an
    interruption at its end) is finished, not skipped."""
    if ckpt is None:
        return 1, 0
    return len(ckpt.epochs) + 1, ckpt.step


def epoch_end(epoch: int, steps_per_epoch: int, total_steps: int) -> int:
    """The step count at which ``epoch`` (1-based) ends."""
    return min(epoch * steps_per_epoch, total_steps)


def schedule_position(schedule: Any) -> Dict[str, Any]:
    """What a per-step LambdaLR schedule needs to continue: its step count (the optimiser's
    state holds the current rate)."""
    return {"last_epoch": int(schedule.last_epoch)}


def restore_schedule(schedule: Any, position: Dict[str, Any]) -> None:
    schedule.last_epoch = int(position["last_epoch"])
    schedule._step_count = schedule.last_epoch + 1
    schedule._last_lr = [group["lr"] for group in schedule.optimizer.param_groups]


def history_of(accountant: Any) -> Tuple[Tuple[float, float, int], ...]:
    return tuple((float(s), float(q), int(n)) for s, q, n in getattr(accountant, "history", []))


def restore_history(accountant: Any, history: Sequence[Tuple[float, float, int]]) -> None:
    """Give an Opacus accountant the steps counted before (its history is a list of
    (noise multiplier, sample rate, steps))."""
    accountant.history = [tuple(h) for h in history]


def _differences(then: Dict[str, Any], now: Dict[str, Any], prefix: str = "") -> List[str]:
    out = []
    for key in sorted(set(then) | set(now)):
        a, b = then.get(key), now.get(key)
        name = f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            out.extend(_differences(a, b, prefix=f"{name}."))
        elif json.dumps(a, default=str) != json.dumps(b, default=str):
            out.append(f"{name} ({a!r} there, {b!r} here)")
    return out


def _short(value: Any) -> str:
    text = str(value)
    return text[:12] + "..." if len(text) > 16 else text
