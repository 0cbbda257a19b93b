"""DP-SGD under MPC against per-sample plaintext autograd: norms, clipping bound, noise scale."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from dp_helpers import ClipFactorProgram, DPProgram
from ppml_hybrid.config import SMPCConfig, parse_run_config
from ppml_hybrid.errors import ConfigError
from ppml_hybrid.model import build_model
from ppml_hybrid.privacy.csprng import csprng_normal
from ppml_hybrid.protocols.dp_step import CLIP_MARGIN_BITS, DPStepParams
from ppml_hybrid.smpc_stage.launcher import run_parties

CONF = Path(__file__).resolve().parents[2] / "conf"
IMAGE = 8
BATCH = 6


def _model(name: str):
    if name == "narrowing":
        # Block 2 has fewer output than input channels (|delta| < |input| per sample), so the
        # clipped sums take the third way of clipped_sums (re-weighted deltas); relu_cnn's
        # blocks take the other two (kept per-sample gradients, re-weighted inputs).
        from ppml_hybrid.config import BlockConfig, ModelConfig

        return ModelConfig(name="narrowing", blocks=(
            BlockConfig(type="conv", out=16, activation="relu", pool="max"),
            BlockConfig(type="conv", out=4, activation="relu", pool="max"),
            BlockConfig(type="dense", out=128, activation="relu"),  # enough parameters for the noise check
            BlockConfig(type="dense", out=2, activation="none")))
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="train", overrides=[f"model={name}"])
    return parse_run_config(OmegaConf.to_container(raw, resolve=True)).model


def _plaintext_per_sample(model_cfg, state, x, delta):
    """Per-sample gradients g_i (dict name -> tensor) by autograd, one sample at a time."""
    per_sample = []
    for i in range(len(x)):
        net = build_model(model_cfg, image_size=IMAGE, seed=0)
        net.load_state_dict(state)
        net(x[i : i + 1]).backward(delta[i : i + 1])
        per_sample.append({n: p.grad.detach().clone() for n, p in net.named_parameters()})
    return per_sample


@pytest.mark.parametrize("model_name", ["relu_cnn", "poly_cnn", "narrowing"])
def test_dp_step_matches_plaintext_clipping_and_bounds_every_contribution(model_name):
    torch.manual_seed(1)
    model_cfg = _model(model_name)
    net = build_model(model_cfg, image_size=IMAGE, seed=0)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    x = torch.randn(BATCH, 1, IMAGE, IMAGE)
    delta = torch.softmax(torch.randn(BATCH, 2), 1) - torch.nn.functional.one_hot(torch.randint(0, 2, (BATCH,)), 2)
    grads = _plaintext_per_sample(model_cfg, state, x, delta)
    norms = torch.tensor([math.sqrt(sum(float((g ** 2).sum()) for g in gi.values())) for gi in grads])
    clip = float(norms.median())  # about half the samples get clipped
    sigma = 1.0

    program = DPProgram(model_cfg, state, IMAGE, clip, (0.0, sigma))
    run = run_parties(smpc=SMPCConfig(master_port=0, timeout_s=120), program=program,
                      party_inputs=[(x, delta), None])
    seen = run.results[0]
    assert run.results[1] == seen  # both parties open the same values

    # Step 1: per-sample squared norms, relative tolerance 2% (fixed point f=16).
    torch.testing.assert_close(torch.tensor(seen[0.0]["sq_norms"]), norms ** 2, rtol=2e-2, atol=2e-3)
    # Steps 2-3: clip factors like Opacus's min(1, C'/||g||), and never above the bound.
    c_eff = clip * (1 - 2.0 ** -CLIP_MARGIN_BITS)
    c = torch.tensor(seen[0.0]["clip"])
    torch.testing.assert_close(c, torch.clamp(c_eff / norms, max=1.0), rtol=1e-2, atol=2e-3)
    assert bool(((c * norms) <= clip * (1 + 1e-6)).all()), (c * norms / clip).tolist()
    assert 0 < int((c < 0.999).sum()) < BATCH

    # Step 4: clipped sums equal sum_i c_i g_i (noise 0), tolerance 1e-2 + 2% of the largest entry.
    for name, value in seen[0.0]["sums"].items():
        expected = sum(float(ci) * gi[name] for ci, gi in zip(c, grads))
        got = torch.tensor(value).reshape(expected.shape)
        tol = 1e-2 + 2e-2 * float(expected.abs().max())
        assert float((got - expected).abs().max()) <= tol, name

    # Steps 5-6: with sigma = 1 the added noise has std sqrt(n/(n-1)) * sigma * C (n = 2: sqrt 2).
    noise = torch.cat([torch.tensor(seen[sigma]["sums"][k]).flatten() - torch.tensor(seen[0.0]["sums"][k]).flatten()
                       for k in seen[0.0]["sums"]])
    expected_std = math.sqrt(2.0) * sigma * clip
    assert noise.numel() > 2000
    assert abs(float(noise.std()) / expected_std - 1) < 0.1
    assert abs(float(noise.mean())) < 0.1 * expected_std


def test_enclave_noise_is_one_draw_of_sigma_c_shared_by_k():
    """dp.noise_source=enclave through a real K (gRPC, mTLS) and real parties: the opened sums carry
    noise of std sigma C (not sqrt(n/(n-1)) sigma C: nobody's noise is wasted), fresh per step;
    without K's shares the step refuses to open anything."""
    import sys

    sys.path.append(str(Path(__file__).resolve().parents[1] / "keyservice"))
    from ks_helpers import keyservice_config, run_spec
    from ppml_hybrid.roles.local_services import party_name, start_local_he_services

    torch.manual_seed(2)
    model_cfg = _model("narrowing")
    state = {k: v.detach().clone() for k, v in build_model(model_cfg, image_size=IMAGE, seed=0).state_dict().items()}
    x = torch.randn(BATCH, 1, IMAGE, IMAGE)
    delta = torch.softmax(torch.randn(BATCH, 2), 1) - torch.nn.functional.one_hot(torch.randint(0, 2, (BATCH,)), 2)
    clip = 0.5
    with start_local_he_services(run=run_spec(parties=2), keyservice=keyservice_config(),
                                 with_evaluator=False) as svc:
        enclave = (svc.key_service.address, svc.key_service.trust_pem,
                   tuple(svc.credential(party_name(j)) for j in (1, 2)))
        program = DPProgram(model_cfg, state, IMAGE, clip, (0.0, 1.0, 1.000001), enclave=enclave)
        run = run_parties(smpc=SMPCConfig(master_port=0, timeout_s=120), program=program,
                          party_inputs=[(x, delta), None])
    seen = run.results[0]
    assert run.results[1] == seen
    names = list(seen[0.0]["sums"])
    exact = torch.cat([torch.tensor(seen[0.0]["sums"][k]).flatten() for k in names])
    noise = torch.cat([torch.tensor(seen[1.0]["sums"][k]).flatten() for k in names]) - exact
    assert noise.numel() > 2000
    assert abs(float(noise.std()) / clip - 1) < 0.1
    assert abs(float(noise.mean())) < 0.1 * clip
    again = torch.cat([torch.tensor(seen[1.000001]["sums"][k]).flatten() for k in names]) - exact
    assert float((again - noise).abs().min()) > 0 or float(torch.corrcoef(torch.stack([again, noise]))[0, 1]) < 0.1

    params = DPStepParams(max_grad_norm=clip, noise_multiplier=1.0, parties=2, noise_source="enclave")
    from ppml_hybrid.protocols.dp_step import noise_for

    with pytest.raises(ConfigError, match="no channel to K"):
        noise_for(params, None)  # never a silent fall-back to the parties' own noise


def test_csprng_normal_moments_and_freshness():
    a = csprng_normal((20000,), std=2.0)
    b = csprng_normal((20000,), std=2.0)
    assert abs(float(a.std()) - 2.0) < 0.06 and abs(float(a.mean())) < 0.06
    assert not torch.equal(a, b)
    assert float(((a / 2.0) ** 4).mean()) == pytest.approx(3.0, abs=0.25)  # Gaussian kurtosis


@pytest.mark.parametrize("kwargs, key", [
    ({"max_grad_norm": 0.0, "noise_multiplier": 1.0, "parties": 2}, "max_grad_norm"),
    ({"max_grad_norm": 1.0, "noise_multiplier": -1.0, "parties": 2}, "noise_multiplier"),
    ({"max_grad_norm": 1.0, "noise_multiplier": 1.0, "parties": 1}, "2 parties"),
])
def test_dp_params_are_validated(kwargs, key):
    with pytest.raises(ConfigError, match=key):
        DPStepParams(**kwargs)


def test_noise_share_per_party_counts_only_honest_parties():
    assert DPStepParams(max_grad_norm=2.0, noise_multiplier=1.5, parties=2).noise_std_per_party == pytest.approx(3.0)
    assert DPStepParams(max_grad_norm=2.0, noise_multiplier=1.5, parties=3).noise_std_per_party == pytest.approx(3.0 / math.sqrt(2))


def test_clip_factors_over_five_decades_of_norms_never_exceed_the_bound():
    """Per-sample norms from 0.01 C to 20,000 C: c within 0.5% plus two fixed-point units (2^-15:
    the one-unit round-down and CrypTen's randomized truncation) of min(1, C'/||g||) up to
    300 C, rounded down (never dropped) up to 3,000 C, and never c ||g|| > C.
    A positive control: norms that overflowed the old two-range version (300 C dropped, 640 C
    weighted 2.2 C) are exact now."""
    clip = 1.0
    norms = torch.tensor([0.01, 0.3, 0.999, 1.5, 5.1, 8.0, 30.0, 100.0, 300.0, 640.0, 1000.0, 3000.0, 20000.0],
                         dtype=torch.float64)
    run = run_parties(smpc=SMPCConfig(master_port=0, timeout_s=120),
                      program=ClipFactorProgram(sq_norms=tuple((norms ** 2).tolist()), max_grad_norm=clip),
                      party_inputs=[None, None])
    c = torch.tensor(run.results[0], dtype=torch.float64)
    want = torch.clamp(clip * (1 - 2.0 ** -CLIP_MARGIN_BITS) / norms, max=1.0)
    assert bool(((c * norms) <= clip * (1 + 1e-9)).all()), (c * norms).tolist()
    exact = norms <= 300
    err = (c - want).abs()[exact]
    assert bool((err <= 5e-3 * want[exact] + 2.0 ** -15).all()), list(zip(norms.tolist(), c.tolist(), want.tolist()))
    kept = norms <= 3000
    assert bool((c[kept] > 0).all()) and bool((c[kept] <= want[kept]).all()), list(zip(norms.tolist(), c.tolist()))


def test_garbage_from_a_failed_truncation_stays_clipped():
    """A wrapped share (a failed truncation: off by ~2^32 in value) in any layer's input or delta
    changes only sample 0's contribution, which stays within C: the released sums move by at
    most 2 C (noise 0), where the old DP step let ~2^32 through."""
    from dp_helpers import GarbageProgram

    model_cfg = _model("relu_cnn")
    net = build_model(model_cfg, image_size=IMAGE, seed=0)
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    torch.manual_seed(2)
    x = torch.randn(BATCH, 1, IMAGE, IMAGE)
    delta = torch.softmax(torch.randn(BATCH, 2), 1) - torch.nn.functional.one_hot(torch.randint(0, 2, (BATCH,)), 2)
    clip = 0.5
    corruptions = ((0, "inputs"), (0, "deltas"), (2, "inputs"), (3, "deltas"), (4, "inputs"))
    run = run_parties(smpc=SMPCConfig(master_port=0, timeout_s=120), party_inputs=[(x, delta), None],
                      program=GarbageProgram(model_cfg, state, IMAGE, clip, corruptions))
    out = run.results[0]
    clean = torch.cat([torch.tensor(v).flatten() for v in out["clean"].values()])
    for index, what in corruptions:
        got = torch.cat([torch.tensor(v).flatten() for v in out[f"{index}.{what}"].values()])
        moved = float((got - clean).norm())
        assert moved <= 2 * clip * (1 + 1e-3), (index, what, moved)
