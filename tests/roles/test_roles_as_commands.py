"""Every role as its own ``python -m ppml_hybrid ROLE`` command, as operators run them on their
hosts: keys made by ``keygen``, one consortium file, one run config, one data folder per site.

Checks: the run finishes with every exit code 0; the coordinator's model matches a plaintext
twin of the same full-batch steps (dp=off) within 1e-3; and the file-access audit shows that
no party opened another site's files and the coordinator opened no scan at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from consortium_harness import Consortium, Role, plaintext_twin, random_set
from ppml_hybrid.config import parse_run_config
from ppml_hybrid.data import DataSplits

CONF = Path(__file__).resolve().parents[2] / "conf"
IMAGE = 8
STEPS = 3


def _cfg(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="train", overrides=[
            "train.progress=false", f"data.image_size={IMAGE}", "dp=off", "train.batch_size=64",
            f"train.max_steps={STEPS}", "train.lr=0.05", "smpc.timeout_s=120", *overrides])
    return parse_run_config(OmegaConf.to_container(raw, resolve=True))


def run_consortium(tmp_path: Path, cfg, roles, *, timeout_s: float = 600):
    splits = DataSplits(train=random_set(12, 0, IMAGE), val=random_set(10, 1, IMAGE), test=random_set(10, 2, IMAGE))
    c = Consortium(tmp_path, cfg, roles, splits)
    try:
        for r in roles:
            if r.name != "coordinator":
                c.start(r.name)
        c.start("coordinator")
        code = c.wait("coordinator", timeout_s)
        assert code == 0, c.log("coordinator")[-3000:]
        for r in roles:
            if r.name.startswith("party-") or r.name == "dealer":
                assert c.wait(r.name, 60) == 0, c.log(r.name)[-3000:]
    finally:
        c.stop_all()
    return c


def check_run(c: Consortium, cfg) -> None:
    saved = torch.load(c.out / "model.pt", weights_only=True)
    twin = plaintext_twin(cfg, c.sites, STEPS)
    diffs = {k: float((saved["state_dict"][k] - v).abs().max()) for k, v in twin.state_dict().items()}
    assert max(diffs.values()) <= 1e-3, diffs
    # who opened what: each party only its own site's files; the coordinator no site file at all
    folders = [str(f.resolve()) for f in c.sites]
    for j in range(cfg.smpc.parties):
        opened = [p for p in c.opened(f"party-{j}") if "/data/site-" in p]
        assert any(p.startswith(folders[j]) for p in opened), f"party-{j} read none of its own files"
        assert not [p for p in opened if not p.startswith(folders[j])], f"party-{j} opened another site's files"
    for name in ("coordinator", "dealer", *(n for n in ("keyservice", "evaluator") if n in c.roles)):
        assert not [p for p in c.opened(name) if "/data/site-" in p], f"{name} opened a scan"


def test_all_mpc_run_of_separate_role_commands_matches_plaintext_and_keeps_data_home(tmp_path):
    cfg = _cfg("split_layer=5")
    roles = [Role("party-0", "127.0.0.1"), Role("party-1", "127.0.0.1"), Role("dealer", "127.0.0.1"),
             Role("coordinator", "127.0.0.1")]
    c = run_consortium(tmp_path, cfg, roles)
    check_run(c, cfg)
    assert "NON-PRIVATE run" in c.log("coordinator")


@pytest.mark.slow
def test_hybrid_run_of_separate_role_commands_with_k_and_e(tmp_path):
    cfg = _cfg("split_layer=3", "he=insecure_test")
    roles = [Role("party-0", "127.0.0.1"), Role("party-1", "127.0.0.1"), Role("dealer", "127.0.0.1"),
             Role("keyservice", "127.0.0.1"), Role("evaluator", "127.0.0.1"), Role("coordinator", "127.0.0.1")]
    dev_root = tmp_path / "k-dev-root.pem"
    splits = DataSplits(train=random_set(12, 0, IMAGE), val=random_set(10, 1, IMAGE), test=random_set(10, 2, IMAGE))
    c = Consortium(tmp_path, cfg, roles, splits)
    try:
        c.start("keyservice", "--development-root-out", str(dev_root))
        c.start("evaluator", "--accept-development-attestation", str(dev_root))
        c.start("dealer")
        for j in range(2):
            c.start(f"party-{j}", "--accept-development-attestation", str(dev_root))
        c.start("coordinator")
        assert c.wait("coordinator", 900) == 0, c.log("coordinator")[-3000:]
    finally:
        c.stop_all()
    check_run(c, cfg)
    assert "DEVELOPMENT" in c.log("party-0")
