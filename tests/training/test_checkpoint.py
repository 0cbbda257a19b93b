"""Checkpoints and ``train.resume``: a run stopped by a real SIGTERM leaves a checkpoint at its
last completed step; the resumed run ends where an uninterrupted one ends, with the same epsilon;
a resume with other settings or other data is refused."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ppml_hybrid.config import parse_run_config
from ppml_hybrid.errors import Interrupted
from ppml_hybrid.pipeline import train
from ppml_hybrid.training import optim, plaintext
from ppml_hybrid.training.checkpoint import CHECKPOINT_FILE, CheckpointError, load_checkpoint

CONF = Path(__file__).resolve().parents[2] / "conf"


def _cfg(out: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="train", overrides=["train.progress=false", *overrides])
    container = OmegaConf.to_container(raw, resolve=True)
    container["output_dir"] = str(out)
    return parse_run_config(container)


def sigterm_after(monkeypatch, module, steps: int) -> None:
    """The process gets a real SIGTERM from inside the ``steps``-th schedule step (i.e. in the
    middle of a public update, where it must be held until the update is complete)."""
    real = optim.make_schedule

    def make(cfg, optimizer, total_steps):
        sched = real(cfg, optimizer, total_steps)
        inner = sched.step
        count = [0]

        def step(*a, **k):
            inner(*a, **k)
            count[0] += 1
            if count[0] == steps:
                os.kill(os.getpid(), signal.SIGTERM)

        sched.step = step
        return sched

    monkeypatch.setattr(module, "make_schedule", make)


PLAIN = ("mode=plaintext", "train.epochs=2", "data.image_size=16", "train.batch_size=64")


def test_plaintext_sigterm_then_resume_ends_like_an_uninterrupted_run(tmp_path, monkeypatch):
    whole = train(_cfg(tmp_path / "whole", *PLAIN))
    with monkeypatch.context() as mp:
        sigterm_after(mp, plaintext, steps=whole["epochs"][0]["steps"] + 3)  # mid-epoch 2
        with pytest.raises(Interrupted, match="checkpoint of step") as stopped:
            train(_cfg(tmp_path / "first", *PLAIN))
    assert signal.getsignal(signal.SIGTERM) is not None  # the handler was restored
    first = load_checkpoint(str(tmp_path / "first"), _cfg(tmp_path / "x", *PLAIN))
    assert first.reason == "interrupted" and first.step == stopped.value.step == whole["epochs"][0]["steps"] + 3
    assert len(first.epochs) == 1 and sum(n for _, _, n in first.accountant_history) == first.step
    assert oct((tmp_path / "first" / CHECKPOINT_FILE).stat().st_mode & 0o777) == "0o600"
    assert not (tmp_path / "first" / "metrics.json").exists()

    resumed = train(_cfg(tmp_path / "second", *PLAIN, f"train.resume={tmp_path / 'first'}"))
    assert resumed["steps"] == whole["steps"] and len(resumed["epochs"]) == 2
    assert resumed["epochs"][0]["steps"] == first.epochs[0]["steps"]  # epoch 1's record, carried over
    assert resumed["epsilon"] == pytest.approx(whole["epsilon"], rel=1e-9)
    # the resumed epoch continued the schedule: the learning rate reached the cosine's end
    done = load_checkpoint(str(tmp_path / "second"), _cfg(tmp_path / "x", *PLAIN))
    assert done.step == whole["steps"] and done.schedule["last_epoch"] == whole["steps"]


def test_a_resume_with_other_settings_or_other_data_is_refused(tmp_path, monkeypatch):
    train(_cfg(tmp_path / "run", *PLAIN, "train.max_steps=3"))
    with pytest.raises(CheckpointError, match=r"dp.noise_multiplier \(1.2 there, 2.0 here\)"):
        train(_cfg(tmp_path / "b", *PLAIN, "train.max_steps=3", "dp.noise_multiplier=2.0",
                   f"train.resume={tmp_path / 'run'}"))
    with pytest.raises(CheckpointError, match="no checkpoint.pt there"):
        train(_cfg(tmp_path / "c", *PLAIN, f"train.resume={tmp_path / 'nothing'}"))
    # other training rows (the checkpoint's digest of them differs): refused before any step
    path = tmp_path / "run" / CHECKPOINT_FILE
    raw = torch.load(path, weights_only=True)
    raw["data"]["train_rows"] = "0" * 64
    torch.save(raw, path)
    with pytest.raises(CheckpointError, match="the training data changed"):
        train(_cfg(tmp_path / "d", *PLAIN, "train.max_steps=3", f"train.resume={tmp_path / 'run'}"))
    # a file that is not a checkpoint (or would run code when unpickled) is refused
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="is not a checkpoint of this project"):
        train(_cfg(tmp_path / "e", *PLAIN, "train.max_steps=3", f"train.resume={tmp_path / 'run'}"))
