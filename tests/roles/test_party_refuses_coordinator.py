"""A coordinator cannot spend more privacy than the parties planned: each party derives the plan
itself and refuses a step out of order, a replayed step, a step beyond its plan, or row counts
that misstate its own site (the real ``ServeCoordinator``, with a scripted coordinator)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, List

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from ppml_hybrid.config import parse_run_config
from ppml_hybrid.roles import messages as m
from ppml_hybrid.roles.party import ProtocolOrderError, ServeCoordinator
from ppml_hybrid.rpc.codec import decode, encode

CONF = Path(__file__).resolve().parents[2] / "conf"


@dataclass
class ScriptedCoordinator:
    """The party's end of the control channel, fed from a script; records what the party sent."""

    script: List[Any]
    sent: List[Any] = field(default_factory=list)
    address: str = "test"

    def recv(self):
        return encode(self.script.pop(0)) if self.script else None

    def send(self, raw: bytes) -> None:
        self.sent.append(decode(raw, types=m.TO_COORDINATOR))


@dataclass
class Ctx:
    rank: int = 0
    parties: int = 2
    session: dict = field(default_factory=dict)

    def heartbeat(self) -> None:
        pass


def _serve(script, *, train_rows=10, steps=2):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        # noise from the parties: this test drives the party alone, with no key service to draw it
        raw = compose(config_name="train", overrides=["split_layer=5", "dp.noise_source=parties", f"train.max_steps={steps}",
                                                       "data.image_size=8"])
    cfg = parse_run_config(OmegaConf.to_container(raw, resolve=True))
    link = ScriptedCoordinator(script=list(script))
    import tempfile

    from ppml_hybrid.training.ledger import PrivacyLedger

    ledger = PrivacyLedger(Path(tempfile.mkdtemp()) / "party-0.jsonl", run_digest="test")
    ServeCoordinator(cfg=cfg, link=link, role="party-0", train_rows=train_rows, ledger=ledger)(Ctx(), inputs=None)
    return link


@pytest.mark.parametrize("script,match", [
    ([m.Start(train_rows=(10, 12)), m.TrainStep(step=5, state={})], "step 5 asked; the next is 0 of 2"),
    ([m.Start(train_rows=(10, 12)), m.TrainStep(step=2, state={})], "step 2 asked; the next is 0 of 2"),
    ([m.Start(train_rows=(99, 12))], "do not list this site's 10 training rows"),
    ([m.Start(train_rows=(10,))], "do not list this site's 10 training rows"),
    ([m.TrainStep(step=0, state={})], "expected Start"),
])
def test_the_party_refuses_what_its_own_plan_does_not_allow(script, match):
    with pytest.raises(ProtocolOrderError, match=match):
        _serve(script)


def test_a_replayed_step_is_refused(monkeypatch):
    """Step 0 runs; asking for step 0 again (to average its noise away) is refused."""
    import ppml_hybrid.roles.party as party

    ran = []

    def fake_program(cfg, plan, *, step, state, hybrid=None, key_service=None):
        ran.append(step)
        return lambda ctx, inputs: None

    monkeypatch.setattr(party, "step_program", fake_program)
    with pytest.raises(ProtocolOrderError, match="step 0 asked; the next is 1 of 2"):
        _serve([m.Start(train_rows=(10, 12)), m.TrainStep(step=0, state={}), m.TrainStep(step=0, state={})])
    assert ran == [0]


def test_the_party_reports_the_plan_it_derived_itself():
    link = _serve([m.Start(train_rows=(10, 12)), m.Stop()])
    ready = link.sent[0]
    assert isinstance(ready, m.Ready) and ready.key_material_digest == ""
    from ppml_hybrid.roles.party import plan_digest
    from ppml_hybrid.training.plan import plan_run

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        raw = compose(config_name="train", overrides=["split_layer=5", "train.max_steps=2", "data.image_size=8"])
    cfg = parse_run_config(OmegaConf.to_container(raw, resolve=True))
    assert ready.plan_digest == plan_digest(plan_run(cfg, train_rows=(10, 12)))
