"""The one-machine consortium (``roles.local``, what ``train.py mode=hybrid`` runs): one folder per
site, a party killed mid-step, no process left behind."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from consortium_harness import random_set
from ppml_hybrid.config import DataConfig, DemoConfig, parse_run_config
from ppml_hybrid.data import DataSplits, read_labels_csv
from ppml_hybrid.data.sites import demo_site_folders
from ppml_hybrid.roles.local import train_local
from ppml_hybrid.smpc_stage.errors import PartyCrashedError
from ppml_hybrid.training import secure

CONF = Path(__file__).resolve().parents[2] / "conf"
IMAGE = 8


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is gone for our purposes
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False


def test_the_demo_is_divided_into_one_folder_per_site_with_every_patient_at_one_site(tmp_path):
    cfg = DataConfig(demo=DemoConfig(n_subjects=12, slices_per_subject=2, stored_size=32))
    folders = demo_site_folders(cfg, parties=3, cache_dir=tmp_path)
    patients = [{r.patient_id for r in read_labels_csv(f / "labels.csv", root=f)} for f in folders]
    assert all(patients) and sum(len(p) for p in patients) == 12
    assert not (patients[0] & patients[1]) and not (patients[1] & patients[2]) and not (patients[0] & patients[2])
    for f in folders:  # every file a site lists lies inside that site's own folder
        assert all(r.path.resolve().is_relative_to(f.resolve()) for r in read_labels_csv(f / "labels.csv", root=f))
    assert demo_site_folders(cfg, parties=3, cache_dir=tmp_path) == folders  # made once


def test_a_party_killed_mid_step_stops_the_run_naming_it_and_leaves_no_process(monkeypatch):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="train", overrides=[
            "train.progress=false", f"data.image_size={IMAGE}", "split_layer=5", "dp=off", "train.batch_size=64",
            "train.max_steps=6", "smpc.timeout_s=60"])
    cfg = parse_run_config(OmegaConf.to_container(raw, resolve=True))
    pids: list = []
    killed = {}
    apply = secure._apply

    def kill_party_1_during_the_next_step(*args, **kwargs):
        apply(*args, **kwargs)
        if not killed:
            killed["at"] = time.monotonic() + 0.3
            threading.Timer(0.3, os.kill, (pids[-1], signal.SIGKILL)).start()  # party-1 started last

    monkeypatch.setattr(secure, "_apply", kill_party_1_during_the_next_step)
    splits = DataSplits(train=random_set(12, 0, IMAGE), val=random_set(10, 1, IMAGE), test=random_set(10, 2, IMAGE))
    with pytest.raises(PartyCrashedError, match=r"party-1 \(127\.0\.0\.1:\d+\) .*(disconnected|killed)") as err:
        train_local(cfg, splits=splits, pids_out=pids)
    assert time.monotonic() - killed["at"] < cfg.smpc.timeout_s, "noticed only by the timeout"
    assert err.value.party == 1 or "party-1" in str(err.value)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [p for p in pids if _alive(p)], "a role process was left behind"


def test_sigterm_checkpoint_resume_ledgers_k_noise_and_the_cap(tmp_path, monkeypatch):
    """The one-machine consortium (real party, dealer and K processes), all-MPC with the default
    noise source (K draws it; no E), dp.max_epsilon between three and four steps' epsilon
    (sample rate 1): a real SIGTERM to the coordinator's process in step 2 leaves checkpoint.pt
    at step 2 and no role process; the resume (another output folder) appends to the same
    ledgers, runs step 3 only, stops before step 4 at the cap, and reports the epsilon of three
    releases, as an uninterrupted run would."""
    import dataclasses
    import json
    import sys

    from ppml_hybrid.errors import Interrupted
    from ppml_hybrid.training.checkpoint import CHECKPOINT_FILE
    from ppml_hybrid.training.ledger import Release, epsilon_of
    from ppml_hybrid.training.plan import plan_run

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))
    from test_checkpoint import sigterm_after  # noqa: E402

    def cfg_for(out: Path, *extra: str, cap: float = 0.0):
        overrides = ["train.progress=false", f"data.image_size={IMAGE}", "split_layer=5", "he=insecure_test",
                     "train.batch_size=64", "train.max_steps=4", "smpc.timeout_s=120", *extra]
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            raw = compose(config_name="train", overrides=overrides)
        container = OmegaConf.to_container(raw, resolve=True)
        container["output_dir"] = str(out)
        cfg = parse_run_config(container)
        return dataclasses.replace(cfg, dp=dataclasses.replace(cfg.dp, max_epsilon=cap)) if cap else cfg

    plain = cfg_for(tmp_path / "x")
    plan = plan_run(plain, train_rows=(6, 6))
    assert plan.schedule.sample_rate == 1.0

    def eps(n: int) -> float:
        return epsilon_of([Release("", i, 1.0, plan.sigma_eff) for i in range(n)], delta=plain.dp.delta,
                          discrete=True)

    cap = (eps(3) + eps(4)) / 2
    splits = DataSplits(train=random_set(12, 0, IMAGE), val=random_set(10, 1, IMAGE), test=random_set(10, 2, IMAGE))
    pids: list = []
    with monkeypatch.context() as mp:
        sigterm_after(mp, secure, steps=2)
        with pytest.raises(Interrupted, match="checkpoint of step 2"):
            train_local(cfg_for(tmp_path / "first", cap=cap), splits=splits, pids_out=pids)
    deadline = time.monotonic() + 10
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert pids and not [p for p in pids if _alive(p)], "a role process was left behind"
    assert (tmp_path / "first" / CHECKPOINT_FILE).is_file() and not (tmp_path / "first" / "metrics.json").exists()

    result = train_local(cfg_for(tmp_path / "second", f"train.resume={tmp_path / 'first'}", cap=cap), splits=splits)
    assert result.steps == 3 and len(result.epochs) == 3 and result.epsilon == pytest.approx(eps(3), rel=1e-9)
    assert result.epsilon <= cap and result.privacy["releases_counted"] == 3
    assert result.privacy["noise_source"] == "enclave" and result.privacy["released_noise_multiplier"] == 1.2
    for j in (0, 1):  # the first session's ledgers, continued
        entries = [json.loads(x) for x in (tmp_path / "first" / "ledgers" / f"party-{j}.jsonl").read_text().splitlines()]
        assert [e["step"] for e in entries] == [0, 1, 2]
    assert not (tmp_path / "second" / "ledgers").exists()
    k_log = (tmp_path / "second" / "logs" / "keyservice.log").read_text()
    assert "step 3: noise share" in k_log and not (tmp_path / "second" / "logs" / "evaluator.log").exists()
