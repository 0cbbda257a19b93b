"""The plaintext twin: the block list as a PyTorch module.

Every encrypted path is checked against this module with the same weights, so its layer
order and parameter names are the reference: ``blocks.{i}.{conv|linear}``.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import nn

from ppml_hybrid.config import BlockConfig, ModelConfig
from ppml_hybrid.model.activations import PolyActivation, Square
from ppml_hybrid.model.spec import block_shapes


def _activation(block: BlockConfig, model: ModelConfig) -> nn.Module:
    if block.activation == "relu":
        return nn.ReLU()
    if block.activation == "poly":
        return PolyActivation(a=model.poly.a, b=model.poly.b, trainable=model.poly.trainable)
    if block.activation == "square":
        return Square()
    return nn.Identity()


def _pool(block: BlockConfig) -> nn.Module:
    if block.pool == "max":
        return nn.MaxPool2d(block.pool_size)
    if block.pool == "avg":
        return nn.AvgPool2d(block.pool_size)
    return nn.Identity()


def clip_rows(x: torch.Tensor, bound: float) -> torch.Tensor:
    """Each sample's activations scaled to L2 norm <= ``bound``; straight-through backward.

    The hybrid mode's split (:mod:`ppml_hybrid.protocols.exact_clip`): what enters HE is bounded
    so every value K decrypts has a public bound. Gradients pass unchanged, as in the protocol
    (E's delta at the split goes straight into the MPC's backward).
    """
    flat = x.reshape(x.size(0), -1)
    scale = torch.clamp(bound / flat.norm(dim=1).clamp(min=1e-12), max=1.0)
    clipped = (flat * scale.unsqueeze(1)).reshape(x.shape)
    return x + (clipped - x).detach()


class BlockModel(nn.Module):
    """A CNN made of config blocks; ``blocks[i]`` is block i+1 of the design's numbering.

    ``split_clip=(s, R)``: after block s every sample's activations are clipped to L2 norm R
    (the hybrid mode's model: the same function the encrypted run trains and evaluates).
    """

    def __init__(self, model: ModelConfig, *, image_size: int, split_clip: Optional[Tuple[int, float]] = None) -> None:
        super().__init__()
        shapes = block_shapes(model, image_size)
        self.spec = model
        self.image_size = image_size
        self.split_clip = split_clip
        blocks = []
        for block, shape in zip(model.blocks, shapes):
            if block.type == "conv":
                layers = nn.ModuleDict(
                    {
                        "conv": nn.Conv2d(
                            shape.in_shape[0],
                            block.out,
                            block.kernel_size,
                            stride=block.stride,
                            padding=block.padding,
                        ),
                        "act": _activation(block, model),
                        "pool": _pool(block),
                    }
                )
            else:
                in_features = 1
                for d in shape.in_shape:
                    in_features *= d
                layers = nn.ModuleDict(
                    {
                        "flatten": nn.Flatten() if len(shape.in_shape) > 1 else nn.Identity(),
                        "linear": nn.Linear(in_features, block.out),
                        "act": _activation(block, model),
                    }
                )
            blocks.append(layers)
        self.blocks = nn.ModuleList(blocks)

    def forward_blocks(self, x: torch.Tensor, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """Run blocks ``start+1..stop`` (0-based slice), e.g. the MPC part is ``(0, split)``."""
        stop = len(self.blocks) if stop is None else stop
        for i in range(start, stop):
            for layer in self.blocks[i].values():
                x = layer(x)
            if self.split_clip is not None and i + 1 == self.split_clip[0] and i + 1 < len(self.blocks):
                x = clip_rows(x, self.split_clip[1])
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_blocks(x)


def build_model(model: ModelConfig, *, image_size: int, seed: int,
                split_clip: Optional[Tuple[int, float]] = None) -> BlockModel:
    """Build the model with weights drawn from ``seed`` (public: every role can rebuild it)."""
    gen_state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        return BlockModel(model, image_size=image_size, split_clip=split_clip)
    finally:
        torch.random.set_rng_state(gen_state)
