"""MPC layers on CrypTen shares with PUBLIC weights (design section 3): forward and backward.

Every layer maps shares to shares; ``forward`` returns the output and what ``backward`` needs
(``saved``: shares only), ``backward`` maps the delta at the output to the delta at the input
and the weight-gradient shares, summed over the batch. Costs (``f = 16`` fixed point):

* conv / dense / average pooling with public weights: local on shares (no Beaver triple);
  the fixed-point truncation after a public multiply is local with 2 parties (zero bytes,
  zero rounds) and CrypTen's wrap-count protocol with 3. Their deltas are local too; their
  weight gradients multiply two sharings (activations x deltas): one Beaver triple each,
  opening the activation and the delta once;
* comparisons (:mod:`~ppml_hybrid.smpc_stage.compare`): the cut bit-sliced adder on the low
  41 bits of the shares (input bound |X| < 2^40, i.e. |x| < 2^24; for max pooling on the
  difference of two candidates), then a bit-packed single-bit B2A: 1 + ceil(log2 40) + 1 = 8
  peer rounds with 2 parties (one more CSA round with 3: 9). Measured per element (party 0 /
  the others, sent + received, tests/smpc_stage/test_compare.py): 79 / 56 B with 2 parties,
  181 / 154 B with 3, against CrypTen's 64-bit A2B ``ge``: 544 / 432 B and 1,913 / 1,696 B
  (15 rounds with 3);
* ReLU: one comparison [x > 0] and one multiplication; the bit is kept and its backward is
  one multiplication by it;
* max pooling: a tournament over the window: per level one comparison [first - second >= 0]
  and one multiplication on half the candidates; the comparison bits are kept, and backward
  routes the delta down the tournament (one multiplication per level). Ties go to the first
  element, as PyTorch;
* a*x^2 + b*x: one square (dealer square pair); backward two multiplications, which also give
  the gradients of a and b;
* flatten: a reshape.

Who learns what: parties open only values masked with dealer randomness (Beaver openings of
arithmetic and XOR shares, the B2A's masked bit); nothing here reveals an activation, a
delta, a comparison bit or a gradient.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

import torch

from ppml_hybrid.smpc_stage.compare import ge_zero, gt_zero

Share = Any  # crypten.mpc.MPCTensor
Grads = Dict[str, Share]


@dataclass(frozen=True)
class Saved:
    """Shares (and public shapes) one layer's backward needs."""

    tensors: Tuple[Share, ...] = ()
    shape: Tuple[int, ...] = ()
    levels: Tuple[Tuple[Share, int, int], ...] = ()  # max pooling: (bits, pairs, width) per level


@dataclass(frozen=True)
class Conv2d:
    """Convolution with a public kernel: ``y = conv(x, W) + b``."""

    name: str
    weight: torch.Tensor
    bias: torch.Tensor
    stride: int
    padding: int
    param_prefix: str
    kind: str = field(default="conv", init=False)

    def forward(self, x: Share, crypten: Any) -> Tuple[Share, Saved]:
        y = x.conv2d(self.weight, stride=self.stride, padding=self.padding)
        return y + self.bias.view(1, -1, 1, 1), Saved(tensors=(x,), shape=tuple(x.size()))

    def input_delta(self, saved: Saved, delta: Share) -> Share:
        """Local: a transposed convolution with the public kernel."""
        k = self.weight.size(-1)
        h_in, w_in = saved.shape[2], saved.shape[3]
        h_out, w_out = delta.size(2), delta.size(3)
        op_h = h_in - ((h_out - 1) * self.stride - 2 * self.padding + k)
        op_w = w_in - ((w_out - 1) * self.stride - 2 * self.padding + k)
        return delta.conv_transpose2d(self.weight, stride=self.stride, padding=self.padding, output_padding=(op_h, op_w))

    def weight_grads(self, saved: Saved, delta: Share) -> Grads:
        """One Beaver convolution: opens (x - a) and (delta - b) once."""
        (x,) = saved.tensors
        k = self.weight.size(-1)
        # dW[o,i] = sum_b corr(x[b,i], delta[b,o]): batch becomes the contracted channel axis.
        gw = x.transpose(0, 1).conv2d(delta.transpose(0, 1), padding=self.padding, dilation=self.stride)
        gw = gw[:, :, :k, :k].transpose(0, 1)
        gb = delta.sum(0).sum(1).sum(1)
        return {f"{self.param_prefix}.weight": gw, f"{self.param_prefix}.bias": gb}

    def backward(self, saved: Saved, delta: Share, crypten: Any, *, need_input_delta: bool) -> Tuple[Optional[Share], Grads]:
        dx = self.input_delta(saved, delta) if need_input_delta else None
        return dx, self.weight_grads(saved, delta)


@dataclass(frozen=True)
class Linear:
    """Dense layer with public weights: ``y = x W^T + b``."""

    name: str
    weight: torch.Tensor
    bias: torch.Tensor
    param_prefix: str
    kind: str = field(default="linear", init=False)

    def forward(self, x: Share, crypten: Any) -> Tuple[Share, Saved]:
        return x.matmul(self.weight.t()) + self.bias, Saved(tensors=(x,))

    def input_delta(self, saved: Saved, delta: Share) -> Share:
        """Local: a product with the public weight matrix."""
        return delta.matmul(self.weight)

    def weight_grads(self, saved: Saved, delta: Share) -> Grads:
        """One Beaver matrix product: opens (delta - a) and (x - b) once."""
        (x,) = saved.tensors
        return {f"{self.param_prefix}.weight": delta.t().matmul(x), f"{self.param_prefix}.bias": delta.sum(0)}

    def backward(self, saved: Saved, delta: Share, crypten: Any, *, need_input_delta: bool) -> Tuple[Optional[Share], Grads]:
        dx = self.input_delta(saved, delta) if need_input_delta else None
        return dx, self.weight_grads(saved, delta)


@dataclass(frozen=True)
class Flatten:
    name: str
    kind: str = field(default="flatten", init=False)

    def forward(self, x: Share, crypten: Any) -> Tuple[Share, Saved]:
        return x.reshape(x.size(0), -1), Saved(shape=tuple(x.size()))

    def backward(self, saved: Saved, delta: Share, crypten: Any, *, need_input_delta: bool) -> Tuple[Optional[Share], Grads]:
        return delta.reshape(*saved.shape), {}


@dataclass(frozen=True)
class AvgPool2d:
    """Average pooling = a public depthwise convolution with weights 1/k^2 and stride k."""

    name: str
    size: int
    channels: int
    kind: str = field(default="avgpool", init=False)

    def _kernel(self) -> torch.Tensor:
        return torch.full((self.channels, 1, self.size, self.size), 1.0 / (self.size * self.size))

    def forward(self, x: Share, crypten: Any) -> Tuple[Share, Saved]:
        return x.conv2d(self._kernel(), stride=self.size, groups=self.channels), Saved(shape=tuple(x.size()))

    def backward(self, saved: Saved, delta: Share, crypten: Any, *, need_input_delta: bool) -> Tuple[Optional[Share], Grads]:
        k = self.size
        op = (saved.shape[2] - delta.size(2) * k, saved.shape[3] - delta.size(3) * k)
        dx = delta.conv_transpose2d(self._kernel(), stride=k, groups=self.channels, output_padding=op)
        return dx, {}


@dataclass(frozen=True)
class MaxPool2d:
    """Max pooling by a comparison tournament over each k x k window (see module doc)."""

    name: str
    size: int
    kind: str = field(default="maxpool", init=False)

    def forward(self, x: Share, crypten: Any) -> Tuple[Share, Saved]:
        b, c, h_in, w_in = x.size()
        k = self.size
        h, w = h_in // k, w_in // k
        v = x[:, :, : h * k, : w * k] if (h * k, w * k) != (h_in, w_in) else x
        v = v.reshape(b, c, h, k, w, k).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h, w, k * k)
        levels = []
        while v.size(-1) > 1:
            m = v.size(-1)
            p = m // 2
            first, second = v[..., 0 : 2 * p : 2], v[..., 1 : 2 * p : 2]
            bit = ge_zero(first - second, crypten=crypten)  # 1 where the earlier candidate wins (ties: first, as PyTorch)
            winner = second + bit * (first - second)
            v = crypten.cat([winner, v[..., 2 * p :]], dim=-1) if m % 2 else winner
            levels.append((bit, p, m))
        return v.reshape(b, c, h, w), Saved(shape=(b, c, h_in, w_in), levels=tuple(levels))

    def backward(self, saved: Saved, delta: Share, crypten: Any, *, need_input_delta: bool) -> Tuple[Optional[Share], Grads]:
        b, c, h_in, w_in = saved.shape
        k = self.size
        h, w = delta.size(2), delta.size(3)
        d = delta.reshape(b, c, h, w, 1)
        for bit, p, m in reversed(saved.levels):
            winners = d[..., :p]
            to_first = bit * winners
            to_second = winners - to_first
            inter = crypten.stack([to_first, to_second], dim=-1).reshape(b, c, h, w, 2 * p)
            d = crypten.cat([inter, d[..., p:]], dim=-1) if m % 2 else inter
        d = d.reshape(b, c, h, w, k, k).permute(0, 1, 2, 4, 3, 5).reshape(b, c, h * k, w * k)
        if (h * k, w * k) != (h_in, w_in):
            d = d.pad((0, w_in - w * k, 0, h_in - h * k))
        return d, {}


@dataclass(frozen=True)
class ReLU:
    """``y = x * [x > 0]``; the comparison bit is kept for backward."""

    name: str
    kind: str = field(default="relu", init=False)

    def forward(self, x: Share, crypten: Any) -> Tuple[Share, Saved]:
        bit = gt_zero(x, crypten=crypten)
        return x * bit, Saved(tensors=(bit,))

    def backward(self, saved: Saved, delta: Share, crypten: Any, *, need_input_delta: bool) -> Tuple[Optional[Share], Grads]:
        (bit,) = saved.tensors
        return delta * bit, {}


@dataclass(frozen=True)
class Poly:
    """``y = a x^2 + b x`` with public scalars a, b (trainable: gradients returned)."""

    name: str
    a: float
    b: float
    param_prefix: str
    trainable: bool = True
    kind: str = field(default="poly", init=False)

    def forward(self, x: Share, crypten: Any) -> Tuple[Share, Saved]:
        x2 = x.square()
        return x2 * self.a + x * self.b, Saved(tensors=(x, x2))

    def backward(self, saved: Saved, delta: Share, crypten: Any, *, need_input_delta: bool) -> Tuple[Optional[Share], Grads]:
        x, x2 = saved.tensors
        t = delta * x
        dx = t * (2.0 * self.a) + delta * self.b
        if not self.trainable:
            return dx, {}
        ga = (delta * x2).sum().reshape(1)
        gb = t.sum().reshape(1)
        return dx, {f"{self.param_prefix}.a": ga, f"{self.param_prefix}.b": gb}


@dataclass(frozen=True)
class Square:
    """``y = x^2``."""

    name: str
    kind: str = field(default="square", init=False)

    def forward(self, x: Share, crypten: Any) -> Tuple[Share, Saved]:
        return x.square(), Saved(tensors=(x,))

    def backward(self, saved: Saved, delta: Share, crypten: Any, *, need_input_delta: bool) -> Tuple[Optional[Share], Grads]:
        (x,) = saved.tensors
        return (delta * x) * 2, {}
