"""CrypTen's own way, for the benchmark: ``crypten.nn`` modules, weights secret-shared.

The same conv blocks as :class:`~ppml_hybrid.smpc_stage.stage.MPCBlocks`, built directly as
``crypten.nn.Conv2d``/``ReLU``/``MaxPool2d``/``AvgPool2d`` (plus a small module for
``a*x^2 + b*x``) in the plaintext twin's order, then ``encrypt()``-ed (party 0 secret-shares
the weights) and run with CrypTen's autograd and the same TTP dealer. Used only to compare
time, bytes and rounds; it computes the same forward and weight gradients.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

from ppml_hybrid.config import ModelConfig
from ppml_hybrid.model.spec import block_shapes
from ppml_hybrid.smpc_stage.errors import LayerShapeError
from ppml_hybrid.smpc_stage.programs import PartyInputs, StepReport, share_batch


def build_crypten_conv_stage(crypten: Any, *, model: ModelConfig, state_dict: Mapping[str, torch.Tensor],
                             image_size: int, stop: int) -> Any:
    """``crypten.nn.Sequential`` of conv blocks 1..stop with the twin's weights (not yet encrypted)."""
    cnn = crypten.nn
    shapes = block_shapes(model, image_size)

    class PolyAct(cnn.Module):
        def __init__(self, a: float, b: float) -> None:
            super().__init__()
            self.a, self.b = a, b

        def forward(self, x: Any) -> Any:
            return x.square().mul(self.a).add(x.mul(self.b))

    mods = []
    for i in range(1, stop + 1):
        block, pre = model.blocks[i - 1], f"blocks.{i - 1}"
        if block.type != "conv":
            raise LayerShapeError("the CrypTen baseline covers conv blocks only")
        conv = cnn.Conv2d(shapes[i - 1].in_shape[0], block.out, block.kernel_size, stride=block.stride, padding=block.padding)
        conv.set_parameter("weight", state_dict[f"{pre}.conv.weight"].detach().clone())
        conv.set_parameter("bias", state_dict[f"{pre}.conv.bias"].detach().clone())
        mods.append(conv)
        if block.activation == "relu":
            mods.append(cnn.ReLU())
        elif block.activation == "poly":
            mods.append(PolyAct(float(state_dict[f"{pre}.act.a"]), float(state_dict[f"{pre}.act.b"])))
        elif block.activation == "square":
            mods.append(PolyAct(1.0, 0.0))
        if block.pool == "max":
            mods.append(cnn.MaxPool2d(block.pool_size))
        elif block.pool == "avg":
            mods.append(cnn.AvgPool2d(block.pool_size))
    return cnn.Sequential(*mods)


@dataclass(frozen=True)
class CrypTenStep:
    """Forward + backward of the CrypTen-native conv stage (program; same inputs as StageStep)."""

    model: ModelConfig
    state_dict: Mapping[str, torch.Tensor]
    image_size: int
    stop: int
    delta_src: int = 0

    def __call__(self, ctx: Any, inputs: PartyInputs) -> StepReport:
        torch.set_num_threads(1)
        crypten = ctx.crypten
        net = build_crypten_conv_stage(crypten, model=self.model, state_dict=self.state_dict,
                                       image_size=self.image_size, stop=self.stop)
        net.encrypt(src=0)  # CrypTen's way: the weights are secret-shared
        net.train()
        start = ctx.transport.snapshot()
        t0 = time.perf_counter()
        x = share_batch(ctx, inputs.rows)
        delta = ctx.share(inputs.delta if ctx.rank == self.delta_src else None, src=self.delta_src)
        t1 = time.perf_counter()
        out = net(x)
        t2 = time.perf_counter()
        out.backward(delta)
        t3 = time.perf_counter()
        return StepReport(rank=ctx.rank, batch=int(x.size(0)), seconds=t3 - t0, forward_s=t2 - t1,
                          backward_s=t3 - t2, traffic=ctx.transport.snapshot() - start, costs=())
