"""CrypTen's own way, for the benchmarks: ``crypten.nn`` modules, weights secret-shared.

The same blocks as :class:`~ppml_hybrid.smpc_stage.stage.MPCBlocks`, built directly as
``crypten.nn.Conv2d``/``ReLU``/``MaxPool2d``/``AvgPool2d``/``Flatten``/``Linear`` (plus a small
module for ``a*x^2 + b*x``) in the plaintext twin's order, then ``encrypt()``-ed (party 0
secret-shares the weights) and run with CrypTen's autograd and the same TTP dealer. Used only
to compare time, bytes and rounds:

* :class:`CrypTenStep`: forward + backward of the conv blocks (same gradients as ours);
* :class:`CrypTenTrainStep`: one NON-PRIVATE training step of the whole model, CrypTen's
  standard recipe (share the batch, forward, ``CrossEntropyLoss``, backward,
  ``update_parameters``); the reference for the hybrid DP step's speed target.

``rewritten=True`` builds what a competent CrypTen user would write instead of the twin's
literal order: max pooling BEFORE the ReLU (the same function, since ReLU is monotone: the
comparisons run on a quarter of the values) and ``CrossEntropyLoss(skip_forward=True)`` (the
loss value is not computed, only its gradient). Both baselines are reported.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Mapping

import torch

from ppml_hybrid.config import ModelConfig
from ppml_hybrid.model.spec import block_shapes
from ppml_hybrid.smpc_stage.programs import PartyInputs, StepReport, share_batch


def build_crypten_blocks(crypten: Any, *, model: ModelConfig, state_dict: Mapping[str, torch.Tensor],
                             image_size: int, stop: int, rewritten: bool = False) -> Any:
    """``crypten.nn.Sequential`` of blocks 1..stop with the twin's weights (not yet encrypted);
    ``rewritten``: max pooling before ReLU (module doc)."""
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
        if block.type == "conv":
            layer = cnn.Conv2d(shapes[i - 1].in_shape[0], block.out, block.kernel_size, stride=block.stride,
                               padding=block.padding)
            name = "conv"
        else:
            if len(shapes[i - 1].in_shape) > 1:
                mods.append(cnn.Flatten())
            layer = cnn.Linear(int(torch.tensor(shapes[i - 1].in_shape).prod()), block.out)
            name = "linear"
        layer.set_parameter("weight", state_dict[f"{pre}.{name}.weight"].detach().clone())
        layer.set_parameter("bias", state_dict[f"{pre}.{name}.bias"].detach().clone())
        mods.append(layer)
        pool_first = rewritten and block.activation == "relu" and block.type == "conv" and block.pool == "max"
        if pool_first:  # max(relu(x)) == relu(max(x)): the comparisons of the ReLU on the pooled values only
            mods.append(cnn.MaxPool2d(block.pool_size))
        if block.activation == "relu":
            mods.append(cnn.ReLU())
        elif block.activation == "poly":
            mods.append(PolyAct(float(state_dict[f"{pre}.act.a"]), float(state_dict[f"{pre}.act.b"])))
        elif block.activation == "square":
            mods.append(PolyAct(1.0, 0.0))
        if block.type == "conv" and block.pool == "max" and not pool_first:
            mods.append(cnn.MaxPool2d(block.pool_size))
        elif block.type == "conv" and block.pool == "avg":
            mods.append(cnn.AvgPool2d(block.pool_size))
    return cnn.Sequential(*mods)


def _encrypted_blocks(ctx: Any, *, model: ModelConfig, state_dict: Mapping[str, torch.Tensor], image_size: int,
                      stop: int, rewritten: bool = False) -> Any:
    """Blocks 1..stop as CrypTen builds them, weights secret-shared by party 0, in training mode."""
    torch.set_num_threads(1)
    net = build_crypten_blocks(ctx.crypten, model=model, state_dict=state_dict, image_size=image_size, stop=stop,
                               rewritten=rewritten)
    net.encrypt(src=0)  # CrypTen's way: the weights are secret-shared
    net.train()
    return net


@dataclass(frozen=True)
class CrypTenStep:
    """Forward + backward of the CrypTen-native conv stage (program; same inputs as StageStep)."""

    model: ModelConfig
    state_dict: Mapping[str, torch.Tensor]
    image_size: int
    stop: int
    delta_src: int = 0
    rewritten: bool = False  # max pooling before ReLU (module doc)

    def __call__(self, ctx: Any, inputs: PartyInputs) -> StepReport:
        net = _encrypted_blocks(ctx, model=self.model, state_dict=self.state_dict, image_size=self.image_size,
                                stop=self.stop, rewritten=self.rewritten)
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


@dataclass(frozen=True)
class CrypTenTrainResult:
    """One party's view of one CrypTen training step (public values only)."""

    batch: int
    seconds: float
    traffic: Any  # Traffic of the step (sharing the batch included, encrypting the model not)


@dataclass(frozen=True)
class CrypTenTrainStep:
    """One non-private CrypTen training step of the whole model (module doc); inputs: ``PartyRows``
    with ``images`` and ``labels`` (each party shares all of its rows: a fixed batch)."""

    model: ModelConfig
    state_dict: Mapping[str, torch.Tensor]
    image_size: int
    lr: float = 0.05
    rewritten: bool = False  # max pooling before ReLU, skip_forward in the loss (module doc)

    def __call__(self, ctx: Any, rows: Any) -> CrypTenTrainResult:
        crypten = ctx.crypten
        net = _encrypted_blocks(ctx, model=self.model, state_dict=self.state_dict, image_size=self.image_size,
                                stop=len(self.model.blocks), rewritten=self.rewritten)
        loss_fn = crypten.nn.CrossEntropyLoss(skip_forward=self.rewritten)
        start, t0 = ctx.transport.snapshot(), time.perf_counter()
        xs, ys = [], []
        for src in range(ctx.parties):
            mine = src == ctx.rank
            xs.append(ctx.share(rows.images if mine else None, src=src))
            onehot = torch.nn.functional.one_hot(rows.labels, self.model.num_classes).float() if mine else None
            ys.append(ctx.share(onehot, src=src))
        x, y = crypten.cat(xs, dim=0), crypten.cat(ys, dim=0)
        out = net(x)
        loss = loss_fn(out, y)
        net.zero_grad()
        loss.backward()
        net.update_parameters(self.lr)
        return CrypTenTrainResult(batch=int(x.size(0)), seconds=time.perf_counter() - t0,
                                  traffic=ctx.transport.snapshot() - start)
