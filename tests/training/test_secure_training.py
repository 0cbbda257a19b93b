"""Encrypted training through the deployed roles (one process per party reading only its own site
folder, the dealer, K and E, the coordinator here) tracks plaintext training of the same model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ppml_hybrid.config import parse_run_config
from ppml_hybrid.data import DataSplits, ImageSet
from ppml_hybrid.errors import ConfigError
from ppml_hybrid.model import build_model
from ppml_hybrid.protocols.dp_step import CLIP_MARGIN_BITS
from ppml_hybrid.roles.local import train_local
from ppml_hybrid.training.optim import make_optimizer, make_schedule
from ppml_hybrid.training.secure import assign_rows

CONF = Path(__file__).resolve().parents[2] / "conf"
IMAGE = 8


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="train", overrides=["train.progress=false", f"data.image_size={IMAGE}", *overrides])
    return parse_run_config(OmegaConf.to_container(raw, resolve=True))


def _set(n: int, seed: int, sites=None) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    return ImageSet(images=torch.randn(n, 1, IMAGE, IMAGE, generator=g), labels=torch.randint(0, 2, (n,), generator=g),
                    patient_ids=tuple(f"p{seed}-{i}" for i in range(n)), sites=tuple(sites or [None] * n),
                    sources=tuple(f"s{i}" for i in range(n)))


def _plaintext_twin(cfg, train: ImageSet, steps: int):
    """Full-batch DP-SGD with noise 0 by hand: per-sample clip to C' (none with dp=off), sum, / N,
    same optimiser."""
    model = build_model(cfg.model, image_size=IMAGE, seed=cfg.seed)
    opt = make_optimizer(cfg, model, train_rows=len(train))
    sched = make_schedule(cfg, opt, steps)
    clip = cfg.dp.max_grad_norm * (1 - 2.0 ** -CLIP_MARGIN_BITS)
    for _ in range(steps):
        total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
        for i in range(len(train)):
            model.zero_grad()
            torch.nn.functional.cross_entropy(model(train.images[i : i + 1]), train.labels[i : i + 1]).backward()
            g = {n: p.grad.clone() for n, p in model.named_parameters()}
            norm = torch.sqrt(sum((v ** 2).sum() for v in g.values()))
            c = min(1.0, clip / float(norm)) if cfg.dp.enabled else 1.0
            for n in total:
                total[n] += c * g[n]
        for n, p in model.named_parameters():
            p.grad = total[n] / len(train)
        opt.step()
        sched.step()
    return model


def _loaded_train_rows(cfg, splits, tmp_path) -> ImageSet:
    """The training rows as the parties read them back from their site folders (NIfTI, normalised)."""
    import dataclasses

    from ppml_hybrid.data import load_site_splits
    from ppml_hybrid.data.sites import write_site_sets

    folders = write_site_sets(splits, parties=cfg.smpc.parties, out_dir=tmp_path)
    parts = [load_site_splits(dataclasses.replace(cfg.data, root=str(f))).train for f in folders]
    return ImageSet(images=torch.cat([p.images for p in parts]), labels=torch.cat([p.labels for p in parts]),
                    patient_ids=sum((p.patient_ids for p in parts), ()), sites=sum((p.sites for p in parts), ()),
                    sources=sum((p.sources for p in parts), ()))


def _train_against_twin(cfg, *, n: int, steps: int, tmp_path: Path):
    """Encrypted training and its plaintext twin on the same rows; max |weight difference| per tensor.

    The 1e-3 bound the tests use: fixed point f=16 (2^-16 ~ 1.5e-5 per value) through softmax,
    clipping and a few momentum steps at lr 0.05; the differences are printed on failure.
    """
    splits = DataSplits(train=_set(n, 0), val=_set(6, 1), test=_set(6, 2))
    result = train_local(cfg, splits=splits)
    twin = _plaintext_twin(cfg, _loaded_train_rows(cfg, splits, tmp_path), steps)
    diffs = {name: float((got - want).abs().max())
             for (name, got), (_, want) in zip(result.model.state_dict().items(), twin.state_dict().items())}
    return result, diffs


@pytest.mark.parametrize("model_name", [pytest.param("poly_cnn", marks=pytest.mark.slow), "relu_cnn"])
def test_all_mpc_steps_track_plaintext_without_noise(model_name, tmp_path):
    steps, n = 5, 8
    cfg = _cfg("mode=hybrid", f"model={model_name}", "split_layer=5", "dp.noise_multiplier=0",
               f"train.batch_size={n}", f"train.epochs={steps}", f"train.max_steps={steps}", "train.lr=0.05", "dp.max_grad_norm=0.5")
    result, diffs = _train_against_twin(cfg, n=n, steps=steps, tmp_path=tmp_path)
    assert max(diffs.values()) <= 1e-3, diffs
    assert result.steps == steps and result.epsilon is not None
    assert all(t["bytes_sent"] > 0 for t in result.traffic_per_party)
    assert set(result.projections) == {"lan", "wan", "wan_slow"}
    assert result.projections["lan"] < result.projections["wan"] < result.projections["wan_slow"]
    stages = {c["stage"] for c in result.stage_costs}
    assert {"share_inputs", "mpc_forward", "mpc_backward", "dp_step"} <= stages
    layers = {(t["party"], t["layer"], t["direction"]): t for t in result.layer_traffic}
    # public-weight convolutions cost nothing with 2 parties, forward and for the input delta
    for j in (0, 1):
        assert layers[(j, "block2.conv", "forward")]["bytes_sent"] == 0
        assert layers[(j, "block2.conv", "forward")]["rounds"] == 0
    assert any(t["bytes_sent"] > 0 for t in result.layer_traffic)


def test_rows_are_assigned_by_site_or_patient():
    by_patient = assign_rows(_set(40, 3), parties=2)
    assert sum(len(r.labels) for r in by_patient) == 40 and all(len(r.labels) > 5 for r in by_patient)
    sites = ["hospital_b"] * 10 + ["hospital_a"] * 6
    by_site = assign_rows(_set(16, 4, sites), parties=2)
    assert [len(r.labels) for r in by_site] == [6, 10]
    with pytest.raises(ConfigError, match="names 2 sites.*smpc.parties=3"):
        assign_rows(_set(16, 4, sites), parties=3)


@pytest.mark.parametrize("split", [3, pytest.param(4, marks=pytest.mark.slow)])
def test_hybrid_steps_with_he_blocks_track_plaintext_without_noise(split, tmp_path):
    """K and E as processes, he=insecure_test (small ring, for speed), 2 parties, full batch, 3 steps."""
    steps, n = 3, 8
    cfg = _cfg("mode=hybrid", "he=insecure_test", f"split_layer={split}", "dp.noise_multiplier=0",
               f"train.batch_size={n}", f"train.epochs={steps}", f"train.max_steps={steps}", "train.lr=0.05", "dp.max_grad_norm=0.5")
    result, diffs = _train_against_twin(cfg, n=n, steps=steps, tmp_path=tmp_path)
    assert max(diffs.values()) <= 1e-3, diffs
    assert result.steps == steps
    stages = {c["stage"]: c for c in result.stage_costs}
    assert {"ss_to_he", "he_forward", "he_to_ss", "he_backward", "mpc_forward", "dp_step"} <= set(stages)
    assert stages["ss_to_he"]["bytes_sent"] > 0 and stages["he_forward"]["seconds"] > 0
    # RPC payloads to K and E are counted: the driver (last party) uploads ciphertexts, every
    # party downloads its shares from K and E (8 bytes per value each); they enter the projections.
    traffic = result.traffic_per_party
    assert traffic[-1]["service_bytes_sent"] > 0 and all(t["service_bytes_received"] > 0 for t in traffic)
    assert stages["he_forward"]["bytes_sent"] > 0


@pytest.mark.slow  # dp=off through the same roles also runs in tests/roles (every role a command)
def test_hybrid_dp_off_opens_exact_sums_and_tracks_plaintext(tmp_path):
    """dp=off (the speed benchmark's baseline): no clipping, no noise, no epsilon; same pipeline."""
    steps, n = 3, 8
    cfg = _cfg("mode=hybrid", "he=insecure_test", "split_layer=4", "dp=off", f"train.batch_size={n}",
               f"train.max_steps={steps}", "train.lr=0.05")
    result, diffs = _train_against_twin(cfg, n=n, steps=steps, tmp_path=tmp_path)
    assert max(diffs.values()) <= 1e-3, diffs
    assert result.epsilon is None and result.noise_multiplier == 0.0
    assert "dp_step" in {c["stage"] for c in result.stage_costs}


def test_standard_network_profiles_match_conf():
    import yaml
    from ppml_hybrid.smpc_stage.cost_model import STANDARD_PROFILES

    for profile in STANDARD_PROFILES:
        conf = yaml.safe_load((CONF / "network" / f"{profile.name}.yaml").read_text())
        assert float(conf["bandwidth_bps"]) == profile.bandwidth_bps and float(conf["rtt_s"]) == profile.rtt_s


def test_a_key_service_whose_attestation_fails_is_refused_before_anything_is_served():
    """Unless its host chose to accept development documents, K's locally signed attestation is
    refused: E checks it at start-up and refuses to serve (the parties' own check is behind it)."""
    import dataclasses

    from ppml_hybrid.he_stage.runspec import HERunSpec
    from ppml_hybrid.roles.local_services import start_local_he_services
    from ppml_hybrid.rpc.errors import UnavailableError

    cfg = _cfg("mode=hybrid", "he=insecure_test", "split_layer=4")
    run = HERunSpec(he=dataclasses.replace(cfg.he, mask_hiding_bits=38), model=cfg.model, split_layer=4,
                    image_size=IMAGE, parties=2, batch_capacity=16)
    with pytest.raises(UnavailableError, match="evaluator refused to start: AttestationError"):
        start_local_he_services(run=run, keyservice=cfg.keyservice, accept_development_attestation=False).stop()


def test_accepting_development_attestation_is_no_key_of_the_shared_config():
    with pytest.raises(Exception, match="allow_development_attestation"):
        _cfg("keyservice.allow_development_attestation=true")
