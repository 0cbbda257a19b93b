"""The block model: shapes, seeded construction, and Opacus per-sample gradients of every layer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch import nn

from ppml_hybrid.config import parse_run_config
from ppml_hybrid.model import PolyActivation, block_shapes, build_model, valid_splits

CONF = Path(__file__).resolve().parents[1] / "conf"


def _model_cfg(name: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"model={name}"])
    return parse_run_config(OmegaConf.to_container(cfg, resolve=True)).model


@pytest.mark.parametrize("name, splits, out_shapes", [
    ("relu_cnn", (3, 4, 5), [(8, 16, 16), (16, 8, 8), (16, 4, 4), (32,), (2,)]),
    ("poly_cnn", (1, 2, 3, 4, 5), [(16, 16, 16), (32, 8, 8), (32, 4, 4), (64,), (2,)]),
])
def test_shapes_and_valid_splits(name, splits, out_shapes):
    model = _model_cfg(name)
    shapes = block_shapes(model, 32)
    assert [s.out_shape for s in shapes] == out_shapes
    assert valid_splits(model) == splits
    net = build_model(model, image_size=32, seed=0)
    assert net(torch.randn(3, 1, 32, 32)).shape == (3, 2)


def test_seeded_build_is_reproducible_and_leaves_global_rng_alone():
    model = _model_cfg("relu_cnn")
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = build_model(model, image_size=32, seed=7)
    assert torch.equal(torch.rand(1), expected_next)
    b = build_model(model, image_size=32, seed=7)
    c = build_model(model, image_size=32, seed=8)
    for (na, pa), (_, pb), (_, pc) in zip(a.state_dict().items(), b.state_dict().items(), c.state_dict().items()):
        assert torch.equal(pa, pb), na
    assert not torch.equal(a.blocks[0]["conv"].weight, c.blocks[0]["conv"].weight)


def test_forward_blocks_composes_the_split():
    net = build_model(_model_cfg("poly_cnn"), image_size=32, seed=0)
    x = torch.randn(4, 1, 32, 32)
    for split in range(1, 6):
        mid = net.forward_blocks(x, 0, split)
        torch.testing.assert_close(net.forward_blocks(mid, split), net(x))


@pytest.mark.parametrize("name", ["relu_cnn", "poly_cnn"])
def test_opacus_per_sample_gradients_match_one_sample_at_a_time(name):
    """Opacus's per-sample gradients (our PolyActivation sampler included) equal single-sample autograd."""
    import ppml_hybrid.privacy.grad_samplers  # noqa: F401
    from opacus import GradSampleModule

    model_cfg = _model_cfg(name)
    net = build_model(model_cfg, image_size=16, seed=0)
    x = torch.randn(5, 1, 16, 16)
    y = torch.randint(0, 2, (5,))
    gsm = GradSampleModule(net, loss_reduction="sum")
    nn.functional.cross_entropy(gsm(x), y, reduction="sum").backward()
    params = dict(net.named_parameters())
    assert any(isinstance(m, PolyActivation) for m in net.modules())
    for i in range(len(y)):
        ref = build_model(model_cfg, image_size=16, seed=0)
        nn.functional.cross_entropy(ref(x[i : i + 1]), y[i : i + 1], reduction="sum").backward()
        for pname, p in ref.named_parameters():
            torch.testing.assert_close(params[pname].grad_sample[i], p.grad, atol=1e-5, rtol=1e-4,
                                       msg=f"{pname}, sample {i}")
