"""The learning-rate schedule: cosine times the optional linear warm-up, and their config checks."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ppml_hybrid.config import parse_run_config
from ppml_hybrid.errors import ConfigError
from ppml_hybrid.training.optim import make_schedule

CONF = Path(__file__).resolve().parents[2] / "conf"


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="train", overrides=list(overrides))
    return parse_run_config(OmegaConf.to_container(raw, resolve=True))


def _rates(cfg, steps: int):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    schedule = make_schedule(cfg, opt, steps)
    rates = []
    for _ in range(steps):
        rates.append(opt.param_groups[0]["lr"])
        opt.step()
        schedule.step()
    return rates


def test_warmup_ramps_linearly_then_follows_the_cosine():
    steps = 8
    cosine = [0.5 * (1 + math.cos(math.pi * s / steps)) for s in range(steps)]
    assert _rates(_cfg(), steps) == pytest.approx(cosine)  # default: no warm-up
    warm = _rates(_cfg("train.lr_warmup=0.25"), steps)  # 2 of 8 steps
    assert warm == pytest.approx([0.5 * cosine[0], cosine[1], *cosine[2:]])
    flat = _rates(_cfg("train.lr_warmup=0.5", "train.lr_schedule=constant"), steps)
    assert flat == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0])


@pytest.mark.parametrize("value", ["-0.1", "1.0"])
def test_warmup_out_of_range_is_refused_by_name(value):
    with pytest.raises(ConfigError, match="train.lr_warmup"):
        _cfg(f"train.lr_warmup={value}")
