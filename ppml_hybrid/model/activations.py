"""Polynomial activations: the only non-linearities CKKS can evaluate.

``PolyActivation`` computes a*x^2 + b*x. A small ``a`` keeps activations from blowing up
(the square grows fast, and under DP noisy updates make it worse); ``b`` near 1 starts the
block close to linear, which is what lets polynomial networks train at all.
"""

from __future__ import annotations

import torch
from torch import nn


class PolyActivation(nn.Module):
    """a*x^2 + b*x with scalar coefficients, trainable or fixed."""

    def __init__(self, *, a: float, b: float, trainable: bool) -> None:
        super().__init__()
        a_t = torch.tensor([float(a)])
        b_t = torch.tensor([float(b)])
        if trainable:
            self.a = nn.Parameter(a_t)
            self.b = nn.Parameter(b_t)
        else:
            self.register_buffer("a", a_t)
            self.register_buffer("b", b_t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.a * x * x + self.b * x

    def extra_repr(self) -> str:
        return f"a={self.a.item():.4g}, b={self.b.item():.4g}, trainable={isinstance(self.a, nn.Parameter)}"


class Square(nn.Module):
    """x^2 (CryptoNets-style)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x
