"""Slow: one full hybrid DP step with the default 128-bit CKKS parameters (he=ckks_128).

relu_cnn, split 3, 2 parties, 8x8 images, a tiny batch, through the deployed roles (K, E, the
dealer and the parties as processes, ``roles.local.train_local``). Checks the step completes, the parties opened one noised sum per trainable
parameter (finite, the right shape) and the public model changed by exactly that update.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ppml_hybrid.config import parse_run_config
from ppml_hybrid.data import DataSplits, ImageSet
from ppml_hybrid.model import build_model
from ppml_hybrid.roles.local import train_local
from ppml_hybrid.training import secure

CONF = Path(__file__).resolve().parents[2] / "conf"
IMAGE = 8


def _set(n: int, seed: int) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(images=torch.randn(n, 1, IMAGE, IMAGE, generator=g), labels=torch.randint(0, 2, (n,), generator=g),
                    patient_ids=tuple(f"p{seed}-{i}" for i in range(n)), sites=(None,) * n,
                    sources=tuple(f"s{i}" for i in range(n)))


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_one_hybrid_step_with_128_bit_parameters(monkeypatch):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="train", overrides=[
            "train.progress=false", f"data.image_size={IMAGE}", "mode=hybrid", "he=ckks_128", "model=relu_cnn",
            "split_layer=3", "train.batch_size=6", "train.max_steps=1", "dp.noise_multiplier=1.0"])
    cfg = parse_run_config(OmegaConf.to_container(raw, resolve=True))
    assert cfg.he.name == "ckks_128" and not cfg.he.insecure
    opened = []
    apply = secure._apply

    def spy(model, optimizer, out, *, expected_batch):
        opened.append(out)
        apply(model, optimizer, out, expected_batch=expected_batch)

    monkeypatch.setattr(secure, "_apply", spy)
    splits = DataSplits(train=_set(12, 0), val=_set(6, 1), test=_set(6, 2))
    before = build_model(cfg.model, image_size=IMAGE, seed=cfg.seed).state_dict()
    result = train_local(cfg, splits=splits)

    assert result.steps == 1 and len(opened) == 1 and result.epsilon is not None and result.epsilon > 0
    out = opened[0]
    params = dict(result.model.named_parameters())
    assert set(out.noised_sums) == set(params)
    for name, p in params.items():
        s = out.noised_sums[name]
        assert s.numel() == p.numel() and torch.isfinite(s).all(), name
        assert s.abs().max() > 0, name  # noise (std sigma C / sqrt(n-1) per party) makes every sum non-zero
    after = result.model.state_dict()
    changed = [k for k in params if not torch.equal(after[k], before[k])]
    assert set(changed) == set(params), set(params) - set(changed)
    assert result.traffic_per_party and all(t["bytes_sent"] > 0 for t in result.traffic_per_party)
