"""Each party's privacy ledger: every release entered durably before it is opened, dp.max_epsilon
enforced by the party itself, earlier sessions of the same run counted."""

from __future__ import annotations

import json

import pytest

from ppml_hybrid.errors import PrivacyBudgetError
from ppml_hybrid.training.ledger import PrivacyLedger, Release, epsilon_of


def rel(step: int, run: str = "run-a") -> Release:
    return Release(run=run, step=step, sample_rate=0.07, noise_multiplier=1.15)


def test_entries_are_appended_and_counted_per_run(tmp_path):
    ledger = PrivacyLedger(tmp_path / "l" / "party-0.jsonl", run_digest="run-a")
    for s in range(3):
        ledger.before_opening(rel(s), max_epsilon=None, delta=1e-5, discrete=True)
    other = PrivacyLedger(ledger.path, run_digest="run-b")
    other.before_opening(rel(0, run="run-b"), max_epsilon=None, delta=1e-5, discrete=True)
    assert [r.step for r in ledger.releases()] == [0, 1, 2] and len(other.releases()) == 1
    lines = [json.loads(x) for x in ledger.path.read_text().splitlines()]
    assert len(lines) == 4 and oct(ledger.path.stat().st_mode & 0o777) == "0o600"
    # a restarted session of the same run sees what was already released
    assert len(PrivacyLedger(ledger.path, run_digest="run-a").releases()) == 3


def test_the_cap_refuses_the_step_that_would_exceed_it_and_writes_nothing_for_it(tmp_path):
    ledger = PrivacyLedger(tmp_path / "party-1.jsonl", run_digest="run-a")
    eps2 = epsilon_of([rel(0), rel(1)], delta=1e-5, discrete=True)
    cap = (eps2 + epsilon_of([rel(0), rel(1), rel(2)], delta=1e-5, discrete=True)) / 2
    ledger.before_opening(rel(0), max_epsilon=cap, delta=1e-5, discrete=True)
    ledger.before_opening(rel(1), max_epsilon=cap, delta=1e-5, discrete=True)
    with pytest.raises(PrivacyBudgetError, match="step 3 would take this site's epsilon to .* dp.max_epsilon"):
        ledger.before_opening(rel(2), max_epsilon=cap, delta=1e-5, discrete=True)
    assert len(ledger.releases()) == 2


def test_an_edited_ledger_is_refused(tmp_path):
    path = tmp_path / "party-0.jsonl"
    path.write_text('{"run": "run-a", "step": 0}\n')
    with pytest.raises(PrivacyBudgetError, match="line 1: not a ledger entry"):
        PrivacyLedger(path, run_digest="run-a").releases()


def test_the_party_enters_each_step_before_it_runs_and_refuses_beyond_its_cap(tmp_path, monkeypatch):
    """The real ServeCoordinator: the ledger holds step s when step s's program starts (so before
    anything of it is opened); with a cap of one step's epsilon the second step is refused."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "roles"))
    from test_party_refuses_coordinator import Ctx, ScriptedCoordinator  # noqa: E402
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ppml_hybrid.config import parse_run_config
    from ppml_hybrid.roles import messages as m
    from ppml_hybrid.roles import party

    conf = Path(__file__).resolve().parents[2] / "conf"
    seen = []
    ledger = PrivacyLedger(tmp_path / "party-0.jsonl", run_digest="digest")

    def fake_program(cfg, plan, *, step, state, hybrid=None, key_service=None):
        seen.append([r.step for r in ledger.releases()])  # what the ledger holds when the step starts
        return lambda ctx, inputs: None

    monkeypatch.setattr(party, "step_program", fake_program)
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        raw = compose(config_name="train", overrides=["split_layer=5", "dp.noise_source=parties", "train.max_steps=3",
                                                       "data.image_size=8", "train.batch_size=4"])
    cfg = parse_run_config(OmegaConf.to_container(raw, resolve=True))
    plan = party.plan_run(cfg, train_rows=(10, 12))
    one = epsilon_of([Release("digest", 0, plan.schedule.sample_rate, plan.sigma_eff)], delta=1e-5, discrete=False)
    import dataclasses

    cfg = dataclasses.replace(cfg, dp=dataclasses.replace(cfg.dp, max_epsilon=one * 1.01))
    link = ScriptedCoordinator(script=[m.Start(train_rows=(10, 12)), m.TrainStep(step=0, state={}),
                                       m.TrainStep(step=1, state={})])
    with pytest.raises(PrivacyBudgetError, match="step 2 would take"):
        party.ServeCoordinator(cfg=cfg, link=link, role="party-0", train_rows=10, ledger=ledger)(Ctx(), inputs=None)
    assert seen == [[0]]  # step 0 was entered before it ran; step 1 never ran
    assert [r.step for r in ledger.releases()] == [0]


def test_a_resume_is_refused_by_a_party_whose_ledger_lacks_the_steps_or_whose_rows_changed(tmp_path, monkeypatch):
    """The real ServeCoordinator on Start(resume_step=2): a ledger with fewer releases, or with
    releases over other training rows (their digest), refuses; the right one answers Ready with
    its count and continues at step 2."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "roles"))
    from test_party_refuses_coordinator import Ctx, ScriptedCoordinator  # noqa: E402
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from ppml_hybrid.config import parse_run_config
    from ppml_hybrid.roles import messages as m
    from ppml_hybrid.roles import party

    monkeypatch.setattr(party, "step_program", lambda *a, **k: (lambda ctx, inputs: None))
    conf = Path(__file__).resolve().parents[2] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        raw = compose(config_name="train", overrides=["split_layer=5", "dp.noise_source=parties", "train.max_steps=4",
                                                       "data.image_size=8", "train.batch_size=4"])
    cfg = parse_run_config(OmegaConf.to_container(raw, resolve=True))

    def serve(ledger, digest, script):
        link = ScriptedCoordinator(script=script)
        party.ServeCoordinator(cfg=cfg, link=link, role="party-0", train_rows=10, ledger=ledger,
                               data_digest=digest)(Ctx(), inputs=None)
        return link.sent

    ledger = PrivacyLedger(tmp_path / "party-0.jsonl", run_digest="digest")
    serve(ledger, "rows-a", [m.Start(train_rows=(10, 12)), m.TrainStep(step=0, state={}), m.Stop()])
    with pytest.raises(PrivacyBudgetError, match="resumes at step 3 but this site's ledger .* holds 1 releases"):
        serve(ledger, "rows-a", [m.Start(train_rows=(10, 12), resume_step=2)])
    serve(ledger, "rows-a", [m.Start(train_rows=(10, 12), resume_step=1), m.TrainStep(step=1, state={}), m.Stop()])
    assert [(r.step, r.data) for r in ledger.releases()] == [(0, "rows-a"), (1, "rows-a")]
    with pytest.raises(party.ProtocolOrderError, match="training rows changed"):
        serve(ledger, "rows-b", [m.Start(train_rows=(10, 12), resume_step=2)])
    sent = serve(ledger, "rows-a", [m.Start(train_rows=(10, 12), resume_step=2), m.TrainStep(step=2, state={}),
                                    m.Stop()])
    assert sent[0].ledger_releases == 2 and [r.step for r in ledger.releases()] == [0, 1, 2]
