"""The CrypTen whole-model baseline (speed reference) computes the same model as the twin."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
import yaml

from ppml_hybrid.config import ModelConfig, from_mapping
from ppml_hybrid.model.plaintext import build_model
from ppml_hybrid.protocols.step_common import PartyRows
from ppml_hybrid.smpc_stage.baseline import CrypTenTrainStep, build_crypten_blocks
from ppml_hybrid.smpc_stage.launcher import PartySession
from smpc_helpers import smpc

CONF = Path(__file__).resolve().parents[2] / "conf"
IMAGE = 16


@dataclass(frozen=True)
class OpenLogits:
    model: ModelConfig
    state_dict: Mapping[str, torch.Tensor]
    rewritten: bool = False

    def __call__(self, ctx: Any, rows: PartyRows) -> torch.Tensor:
        net = build_crypten_blocks(ctx.crypten, model=self.model, state_dict=self.state_dict, image_size=IMAGE,
                                   stop=len(self.model.blocks), rewritten=self.rewritten)
        net.encrypt(src=0)
        xs = [ctx.share(rows.images if r == ctx.rank else None, src=r) for r in range(ctx.parties)]
        return net(ctx.crypten.cat(xs, dim=0)).get_plain_text()


def test_crypten_whole_model_matches_the_twin_and_trains():
    model = from_mapping(ModelConfig, yaml.safe_load((CONF / "model" / "relu_cnn.yaml").read_text()), "model")
    net = build_model(model, image_size=IMAGE, seed=0)
    g = torch.Generator().manual_seed(3)
    rows = [PartyRows(images=torch.randn(3, 1, IMAGE, IMAGE, generator=g), labels=torch.tensor([0, 1, 1]))
            for _ in range(2)]
    with PartySession(smpc=smpc(2), party_inputs=rows) as session:
        logits = session.run(OpenLogits(model=model, state_dict=net.state_dict())).results[0]
        pooled_first = session.run(OpenLogits(model=model, state_dict=net.state_dict(), rewritten=True)).results[0]
        step = session.run(CrypTenTrainStep(model=model, state_dict=net.state_dict(), image_size=IMAGE)).results
        rewritten = session.run(CrypTenTrainStep(model=model, state_dict=net.state_dict(), image_size=IMAGE,
                                                 rewritten=True)).results
    want = net(torch.cat([r.images for r in rows])).detach()
    assert torch.allclose(logits, want, atol=2e-3, rtol=1e-2), (logits, want)
    # the competent user's rewrite (max pooling before ReLU) computes the same model, for fewer bytes
    assert torch.allclose(pooled_first, want, atol=2e-3, rtol=1e-2), (pooled_first, want)
    assert [s.batch for s in step] == [6, 6] and [s.batch for s in rewritten] == [6, 6]
    assert all(s.traffic.bytes_sent > 0 for s in step)
    assert max(s.traffic.bytes_sent for s in rewritten) < max(s.traffic.bytes_sent for s in step)
