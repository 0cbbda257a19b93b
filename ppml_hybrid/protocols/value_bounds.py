"""Public bounds on every value the HE->SS conversion hands back, from the public weights.

K decrypts ``v + R`` for each HE tensor v; the mask R hides v only if |v| is below the bound
its width was chosen for (:mod:`ppml_hybrid.he_stage.evaluator.masking`). This module derives
that bound from what the protocol enforces, by interval arithmetic over the HE blocks that
tracks, per tensor, a bound on every element and on each sample's L2 norm:

* the split activations enter HE with each sample's L2 norm at most R (an exact check in MPC,
  :mod:`ppml_hybrid.protocols.exact_clip`) and every element clamped by SS->HE, ``|a| <= A``;
* ``delta_z = softmax(z) - y`` enters HE clamped elementwise, ``|delta_z| <= D``;
* every weight is public.

Forward, block by block, for input bounds (elements e_i, norm r): ``|pre_o| <= min(||W_o||_2 r,
||W_o||_1 max e) + |b_o|`` and ``||pre|| <= ||W||_op r + ||b||`` (conv: per output channel with the
kernel's norms, ``||conv||_op <= k ||K||_F``); ``a x^2 + b x``: ``|a| p^2 + |b| p`` per element
and ``|a| ||pre||^2 + |b| ||pre||`` in norm (``||x^2||_2 <= ||x||_2^2``); average pooling keeps
both. Backward from ``|delta_z| <= D`` (norm ``sqrt(k) D``): ``|(W^T d)_i| <= min(||W_:i||_2 ||d||,
||W_:i||_1 max|d|)``, ``||W^T d|| <= ||W||_op ||d||``; the activation's derivative ``2|a| p + |b|``
multiplies both. The bound of a tensor is the maximum over its elements: it holds for every
slot whatever the data, so an honest run never exceeds it.

Who learns what: the bounds are functions of public weights and public constants only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Mapping, Tuple

import torch

from ppml_hybrid.config import ModelConfig


@dataclass(frozen=True)
class HEValueBounds:
    """``bounds[name]``: a public upper bound on |v| for every HE tensor that HE->SS returns."""

    bounds: Mapping[str, float]

    def value_bits(self, name: str) -> int:
        """The smallest V >= 0 with |v| < 2^V for every value of tensor ``name``."""
        return value_bits_for(self.bounds[name])


# room for what the real arithmetic adds to the exact-math bound: CKKS and fixed-point errors
# (absolute, far below 2^-10) and float rounding of the weights (relative, below 2^-20)
BOUND_MARGIN = 2.0 ** -10


def value_bits_for(bound: float) -> int:
    """The smallest V >= 0 with 2^V > bound (1 + 2^-10) + 2^-10."""
    if not math.isfinite(bound):
        raise ValueError(f"value bound must be finite; got {bound}")
    padded = bound * (1.0 + BOUND_MARGIN) + BOUND_MARGIN
    return max(0, math.floor(math.log2(padded)) + 1)


@dataclass(frozen=True)
class _Bound:
    elem: torch.Tensor  # per element of one sample (flattened), float64
    norm: float  # per-sample L2 norm

    @property
    def max(self) -> float:
        return float(self.elem.max()) if self.elem.numel() else 0.0


def _opnorm(w: torch.Tensor) -> float:
    if w.dim() == 2:
        return float(torch.linalg.matrix_norm(w, 2))
    k = w.size(-1)
    return float(k * w.norm())  # ||conv||_op <= k ||K||_F (each input meets at most k^2 outputs)


def _forward_linear(w: torch.Tensor, bias: torch.Tensor, x: _Bound, pre_shape: Tuple[int, ...]) -> _Bound:
    if w.dim() == 2:
        per = torch.minimum(w.norm(dim=1) * x.norm, w.abs().sum(1) * x.max) + bias.abs()
        return _Bound(per, _opnorm(w) * x.norm + float(bias.norm()))
    out_ch = w.size(0)
    per_ch = torch.minimum(w.reshape(out_ch, -1).norm(dim=1) * x.norm, w.abs().reshape(out_ch, -1).sum(1) * x.max)
    per_ch = per_ch + bias.abs()
    positions = int(torch.tensor(pre_shape[1:]).prod())
    norm = _opnorm(w) * x.norm + float(bias.norm()) * math.sqrt(positions)
    return _Bound(per_ch.repeat_interleave(positions), norm)


def _backward_linear(w: torch.Tensor, d: _Bound, in_shape: Tuple[int, ...]) -> _Bound:
    if w.dim() == 2:
        per = torch.minimum(w.norm(dim=0) * d.norm, w.abs().sum(0) * d.max)
        return _Bound(per, _opnorm(w) * d.norm)
    in_ch = w.size(1)
    wt = w.transpose(0, 1).reshape(in_ch, -1)
    per_ch = torch.minimum(wt.norm(dim=1) * d.norm, wt.abs().sum(1) * d.max)
    positions = int(torch.tensor(in_shape[1:]).prod())
    return _Bound(per_ch.repeat_interleave(positions), _opnorm(w) * d.norm)


def _pool(b: _Bound, pool_size: int, out_numel: int) -> _Bound:
    """Average pooling: no element and no norm grows; only the element count changes."""
    if not pool_size:
        return b
    return _Bound(torch.full((out_numel,), b.max, dtype=torch.float64), b.norm)


def _unpool(b: _Bound, pool_size: int, pre_numel: int) -> _Bound:
    if not pool_size:
        return b
    return _Bound(torch.full((pre_numel,), b.max / pool_size ** 2, dtype=torch.float64), b.norm / pool_size)


def he_value_bounds(*, model: ModelConfig, state_dict: Mapping[str, torch.Tensor], split_layer: int,
                    image_size: int, input_elem_bound: float, input_norm_bound: float,
                    delta_bound: float) -> HEValueBounds:
    """Bounds for the tensors of blocks ``split_layer+1 .. L`` (names as the hybrid step uses them)."""
    from ppml_hybrid.he_stage.head import _specs  # the head's own shapes (pre-activation, pooled)

    specs = {s.index: s for s in _specs(model, split_layer, image_size)}
    n = len(model.blocks)
    first = specs[split_layer + 1]
    x = _Bound(torch.full((first.n_in,), float(input_elem_bound), dtype=torch.float64),
               min(float(input_norm_bound), float(input_elem_bound) * math.sqrt(first.n_in)))
    out: Dict[str, float] = {}
    pres: Dict[int, _Bound] = {}
    derivs: Dict[int, torch.Tensor] = {}
    deriv_max: Dict[int, float] = {}
    for j in range(split_layer + 1, n + 1):
        spec, block = specs[j], model.blocks[j - 1]
        prefix = f"blocks.{j - 1}"
        layer = f"{prefix}.{'conv' if block.type == 'conv' else 'linear'}"
        w = state_dict[f"{layer}.weight"].double()
        bias = state_dict[f"{layer}.bias"].double()
        pre = _forward_linear(w, bias, x, spec.pre_shape)
        pres[j] = pre
        if j == n:
            out["logits"] = pre.max
            break
        act = block.activation
        if act == "poly":
            a, b = abs(float(state_dict[f"{prefix}.act.a"])), abs(float(state_dict[f"{prefix}.act.b"]))
            elem = a * pre.elem ** 2 + b * pre.elem
            norm = min(a * pre.norm ** 2 + b * pre.norm, float(elem.norm()))
            derivs[j] = 2 * a * pre.elem + b
        elif act == "square":
            elem, norm = pre.elem ** 2, min(pre.norm ** 2, float((pre.elem ** 2).norm()))
            derivs[j] = 2 * pre.elem
        else:
            elem, norm = pre.elem, pre.norm
            derivs[j] = torch.ones_like(pre.elem)
        deriv_max[j] = float(derivs[j].max())
        x = _pool(_Bound(elem, norm), spec.pool_size, spec.n_out)
        out[f"pre.{j}"] = pre.max
        out[f"act.{j}"] = x.max
    k = model.num_classes
    d = _Bound(torch.full((k,), float(delta_bound), dtype=torch.float64), float(delta_bound) * math.sqrt(k))
    for j in range(n, split_layer, -1):
        spec, block = specs[j], model.blocks[j - 1]
        layer = f"blocks.{j - 1}.{'conv' if block.type == 'conv' else 'linear'}"
        if j < n:
            d = _unpool(d, spec.pool_size, spec.n_pre)
            out[f"delta_post.{j}"] = d.max
            elem = d.elem * derivs[j]
            d = _Bound(elem, min(d.norm * deriv_max[j], float(elem.norm())))
            out[f"delta_pre.{j}"] = d.max
        w = state_dict[f"{layer}.weight"].double()
        d = _backward_linear(w, d, spec.in_shape)
    out["delta_input"] = d.max
    return HEValueBounds(bounds=out)
