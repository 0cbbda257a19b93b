"""Per-sample gradients for this project's own layers, registered with Opacus.

Opacus computes per-sample gradients with a registry of functions keyed by module class;
importing this module fills the registry for :class:`PolyActivation`.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from opacus.grad_sample import register_grad_sampler
from torch import nn

from ppml_hybrid.model.activations import PolyActivation


@register_grad_sampler(PolyActivation)
def poly_grad_sample(
    layer: PolyActivation, activations: List[torch.Tensor], backprops: torch.Tensor
) -> Dict[nn.Parameter, torch.Tensor]:
    """d(a x^2 + b x)/da = x^2, /db = x, summed over every non-batch position per sample."""
    x = activations[0]
    dims = tuple(range(1, x.dim()))
    grads: Dict[nn.Parameter, torch.Tensor] = {}
    if layer.a.requires_grad:
        grads[layer.a] = (backprops * x * x).sum(dim=dims).unsqueeze(1)
    if layer.b.requires_grad:
        grads[layer.b] = (backprops * x).sum(dim=dims).unsqueeze(1)
    return grads
