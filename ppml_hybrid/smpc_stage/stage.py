"""Blocks 1..split of the model under MPC: forward and backward with per-layer shares kept.

:class:`MPCBlocks` is built from the model config and the PUBLIC weights (the plaintext
twin's ``state_dict``: ``blocks.{i}.conv|linear|act.a|act.b``). Steps:

* ``forward(x)`` (design step 2) runs each layer on shares and keeps, per layer, its input
  and output shares and what its backward needs (:class:`ForwardTrace`);
* ``backward(trace, delta)`` (design step 8) runs from the delta at the split back to block 1
  and returns every layer's output delta and input delta, and the weight-gradient shares
  summed over the batch (:class:`BackwardResult`): what the DP step (per-sample norms,
  clipping) and the conversion at the split need. Nothing is opened.

A conv block with ReLU and max pooling is evaluated as conv -> max pool -> ReLU: ReLU is
monotone, so ``maxpool(relu(x)) = relu(maxpool(x))`` and both orders have the same gradient;
this order runs ReLU on a quarter of the elements (2x2 pooling).

Each layer's traffic (rounds and bytes, per channel) and time is measured through the party's
transport when one is given (:class:`LayerCost`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Tuple

import torch

from ppml_hybrid.config import BlockConfig, ModelConfig
from ppml_hybrid.model.spec import block_shapes
from ppml_hybrid.smpc_stage import layers as L
from ppml_hybrid.smpc_stage.errors import LayerShapeError
from ppml_hybrid.smpc_stage.transport import Traffic, Transport


@dataclass(frozen=True)
class LayerCost:
    """Traffic and time of one layer in one direction, for one party."""

    layer: str
    kind: str
    direction: str  # forward | backward (input delta) | wgrad (weight gradients)
    traffic: Traffic
    seconds: float


@dataclass(frozen=True)
class LayerRecord:
    """One layer's forward: input and output shares plus what backward needs."""

    name: str
    kind: str
    input: Any
    output: Any
    saved: L.Saved


@dataclass(frozen=True)
class ForwardTrace:
    records: Tuple[LayerRecord, ...]
    costs: Tuple[LayerCost, ...]

    @property
    def output(self) -> Any:
        return self.records[-1].output

    def activation(self, name: str) -> Any:
        """Output share of layer ``name`` (e.g. ``block2.pool``)."""
        for r in self.records:
            if r.name == name:
                return r.output
        raise KeyError(f"no layer {name!r}; layers: {[r.name for r in self.records]}")


@dataclass(frozen=True)
class BackwardResult:
    """Deltas (at each layer's output and input) and weight gradients, all as shares."""

    output_deltas: Mapping[str, Any]
    input_deltas: Mapping[str, Any]  # the first layer's is absent (not needed)
    grads: Mapping[str, Any]  # parameter name (plaintext twin's) -> summed gradient share
    costs: Tuple[LayerCost, ...]


def _layers_of_block(i: int, block: BlockConfig, model: ModelConfig, in_shape: Tuple[int, ...],
                     state: Mapping[str, torch.Tensor]) -> List[Any]:
    pre = f"blocks.{i - 1}"
    name = f"block{i}"

    def param(key: str) -> torch.Tensor:
        if key not in state:
            raise LayerShapeError(f"public weights lack {key!r}; pass the plaintext twin's state_dict()")
        return state[key].detach().float().clone()

    out: List[Any] = []
    if block.type == "conv":
        w = param(f"{pre}.conv.weight")
        if tuple(w.shape) != (block.out, in_shape[0], block.kernel_size, block.kernel_size):
            raise LayerShapeError(f"{pre}.conv.weight has shape {tuple(w.shape)}, the config implies "
                                  f"{(block.out, in_shape[0], block.kernel_size, block.kernel_size)}")
        out.append(L.Conv2d(f"{name}.conv", w, param(f"{pre}.conv.bias"), block.stride, block.padding, f"{pre}.conv"))
    else:
        if len(in_shape) > 1:
            out.append(L.Flatten(f"{name}.flatten"))
        w = param(f"{pre}.linear.weight")
        n_in = int(torch.tensor(in_shape).prod())
        if tuple(w.shape) != (block.out, n_in):
            raise LayerShapeError(f"{pre}.linear.weight has shape {tuple(w.shape)}, the config implies {(block.out, n_in)}")
        out.append(L.Linear(f"{name}.linear", w, param(f"{pre}.linear.bias"), f"{pre}.linear"))

    act: Optional[Any] = None
    if block.activation == "relu":
        act = L.ReLU(f"{name}.act")
    elif block.activation == "poly":
        a, b = state.get(f"{pre}.act.a"), state.get(f"{pre}.act.b")
        a = float(a) if a is not None else model.poly.a
        b = float(b) if b is not None else model.poly.b
        act = L.Poly(f"{name}.act", a, b, f"{pre}.act", trainable=model.poly.trainable)
    elif block.activation == "square":
        act = L.Square(f"{name}.act")
    pool: Optional[Any] = None
    if block.type == "conv" and block.pool == "max":
        pool = L.MaxPool2d(f"{name}.pool", block.pool_size)
    elif block.type == "conv" and block.pool == "avg":
        pool = L.AvgPool2d(f"{name}.pool", block.pool_size, block.out)
    if isinstance(act, L.ReLU) and isinstance(pool, L.MaxPool2d):
        out += [pool, act]  # monotone: same values and gradients, 1/k^2 of the comparisons
    else:
        out += [x for x in (act, pool) if x is not None]
    return out


@dataclass(frozen=True)
class MPCBlocks:
    """Blocks ``start+1..stop`` as MPC layers with public weights (see the module doc)."""

    layers: Tuple[Any, ...]
    in_shape: Tuple[int, ...]
    out_shape: Tuple[int, ...]

    @classmethod
    def build(cls, *, model: ModelConfig, state_dict: Mapping[str, torch.Tensor], image_size: int,
              stop: int, start: int = 0) -> "MPCBlocks":
        shapes = block_shapes(model, image_size)
        if not 0 <= start < stop <= len(shapes):
            raise LayerShapeError(f"blocks {start + 1}..{stop} are not in 1..{len(shapes)}")
        layers: List[Any] = []
        for i in range(start + 1, stop + 1):
            layers += _layers_of_block(i, model.blocks[i - 1], model, shapes[i - 1].in_shape, state_dict)
        return cls(tuple(layers), shapes[start].in_shape, shapes[stop - 1].out_shape)

    def forward(self, x: Any, *, crypten: Any, transport: Optional[Transport] = None) -> ForwardTrace:
        if tuple(x.size()[1:]) != self.in_shape:
            raise LayerShapeError(f"input shares have shape {tuple(x.size())}, expected (batch, *{self.in_shape})")
        records, costs = [], []
        for layer in self.layers:
            t0, c0 = time.perf_counter(), transport.snapshot() if transport else None
            y, saved = layer.forward(x, crypten)
            costs.append(_cost(layer, "forward", transport, c0, t0))
            records.append(LayerRecord(layer.name, layer.kind, x, y, saved))
            x = y
        return ForwardTrace(tuple(records), tuple(costs))

    def backward(self, trace: ForwardTrace, delta: Any, *, crypten: Any,
                 transport: Optional[Transport] = None, weight_grads: bool = True) -> BackwardResult:
        """Deltas of every layer; batch-summed weight gradients unless ``weight_grads=False``
        (the DP step computes its own clipped sums from the deltas and skips these products)."""
        if tuple(delta.size()) != tuple(trace.output.size()):
            raise LayerShapeError(f"delta has shape {tuple(delta.size())}, the forward output {tuple(trace.output.size())}")
        out_d: Dict[str, Any] = {}
        in_d: Dict[str, Any] = {}
        grads: Dict[str, Any] = {}
        costs = []
        for idx in range(len(self.layers) - 1, -1, -1):
            layer, rec = self.layers[idx], trace.records[idx]
            out_d[layer.name] = delta
            t0, c0 = time.perf_counter(), transport.snapshot() if transport else None
            if hasattr(layer, "weight_grads"):  # public-weight linear map: delta local, grads Beaver
                g = layer.weight_grads(rec.saved, delta) if weight_grads else {}
                costs.append(_cost(layer, "wgrad", transport, c0, t0))
                t0, c0 = time.perf_counter(), transport.snapshot() if transport else None
                delta = layer.input_delta(rec.saved, delta) if idx > 0 else None
            else:
                delta, g = layer.backward(rec.saved, delta, crypten, need_input_delta=idx > 0)
            costs.append(_cost(layer, "backward", transport, c0, t0))
            grads.update(g)
            if delta is not None:
                in_d[layer.name] = delta
        return BackwardResult(out_d, in_d, grads, tuple(costs))


def _cost(layer: Any, direction: str, transport: Optional[Transport], before: Optional[Traffic], t0: float) -> LayerCost:
    traffic = transport.snapshot() - before if transport is not None and before is not None else Traffic()
    return LayerCost(layer.name, layer.kind, direction, traffic, time.perf_counter() - t0)
