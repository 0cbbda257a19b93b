"""Every config in conf/ composes and parses; bad values fail with the key named."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ppml_hybrid.config import parse_run_config
from ppml_hybrid.errors import ConfigError, SplitError
from ppml_hybrid.pipeline import check_run

CONF = Path(__file__).resolve().parents[1] / "conf"
GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir())


def _compose(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def _options(group: str):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.mark.parametrize(
    "override",
    [f"{g}={o}" for g in GROUPS for o in _options(g)],
)
def test_every_group_option_composes_and_parses(override):
    extra = ["data.root=/scans", "data.labels=/scans/labels.csv"] if override == "data=nifti" else []
    extra += ["split_layer=1"] if override == "model=poly_cnn" else []
    cfg = parse_run_config(_compose(override, *extra))
    check_run(cfg)


def test_defaults_match_the_design_contract():
    cfg = parse_run_config(_compose())
    assert cfg.mode == "hybrid" and cfg.split_layer == 3
    assert cfg.data.name == "demo" and cfg.data.image_size == 32
    assert cfg.model.name == "relu_cnn" and len(cfg.model.blocks) == 5
    assert cfg.smpc.parties == 2 and cfg.he.name == "ckks_128" and not cfg.he.insecure
    assert cfg.he.security_level == "HEStd_128_classic"
    assert cfg.dp.enabled and cfg.dp.accountant == "rdp"
    assert cfg.network.name == "lan"


def test_dp_off_disables_dp():
    assert not parse_run_config(_compose("dp=off")).dp.enabled


@pytest.mark.parametrize(
    "override, key",
    [
        ("dp.max_grad_norm=abc", "dp.max_grad_norm"),
        ("dp.max_grad_norm=-1", "dp.max_grad_norm"),
        ("train.batch_size=0", "train.batch_size"),
        ("smpc.parties=4", "smpc.parties"),
        ("dp.accountant=gdp", "dp.accountant"),
        ("mode=cloud", "mode"),
        ("data.slice_range=[0.7,0.2]", "data.slice_range"),
        ("+train.bogus=1", "train.bogus"),
        ("split_layer=three", "split_layer"),
        ("data.slice_axis=3", "data.slice_axis"),
    ],
)
def test_bad_values_name_the_key(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        parse_run_config(_compose(override))


def test_a_sum_of_fractions_out_of_range_shows_each_value():
    with pytest.raises(ConfigError, match=r"got 0\.9 \+ 0\.15 = 1\.05"):
        parse_run_config(_compose("data.val_fraction=0.9"))


def test_dp_needs_noise_or_target():
    with pytest.raises(ConfigError, match="noise_multiplier or dp.target_epsilon"):
        parse_run_config(_compose("dp.noise_multiplier=null"))


@pytest.mark.parametrize("split", [0, 6, -1])
def test_split_out_of_range(split):
    with pytest.raises(SplitError, match=f"split_layer={split} is out of range.*1..5"):
        check_run(parse_run_config(_compose(f"split_layer={split}")))


@pytest.mark.parametrize("split, block", [(1, "block 2"), (2, "block 3")])
def test_relu_block_on_he_side_is_named(split, block):
    with pytest.raises(SplitError, match=f"{block} \\(conv, activation=relu, pool=max\\).*valid splits.*3, 4, 5"):
        check_run(parse_run_config(_compose(f"split_layer={split}")))


def test_max_pool_on_he_side_is_named():
    cfg = _compose("model=poly_cnn", "split_layer=1")
    cfg["model"]["blocks"][2]["pool"] = "max"
    with pytest.raises(SplitError, match="block 3 .*max pooling"):
        check_run(parse_run_config(cfg))


@pytest.mark.parametrize("split", [1, 2, 3, 4, 5])
def test_poly_cnn_allows_every_split(split):
    check_run(parse_run_config(_compose("model=poly_cnn", f"split_layer={split}")))


def test_image_too_small_for_the_pooling():
    with pytest.raises(ConfigError, match="shrinks to 0x0 at data.image_size=4"):
        check_run(parse_run_config(_compose("data.image_size=4")))


def test_delta_must_be_below_one_over_the_training_rows():
    from ppml_hybrid.training.checks import check_privacy_for_data as _check_privacy_for_data

    cfg = parse_run_config(_compose("dp.delta=0.001"))
    with pytest.raises(ConfigError, match=r"dp\.delta=0\.001 is not below 1/N"):
        _check_privacy_for_data(cfg, n_train=5000)
    _check_privacy_for_data(cfg, n_train=500)  # 1/N = 0.002: fine
    _check_privacy_for_data(parse_run_config(_compose("dp=off")), n_train=10 ** 6)  # no DP, nothing to check
