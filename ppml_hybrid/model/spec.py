"""The model as a list of blocks, its shapes, and which splits it allows.

A conv block is conv + activation + pooling; a dense block is dense + activation (flatten
belongs to the first dense block). ``split_layer = s`` runs blocks 1..s under MPC and
s+1..L under HE. HE has no comparisons, so ReLU and max pooling may only sit in blocks
1..s; :func:`validate_split` rejects any split that would put one on the HE side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Tuple

from ppml_hybrid.config import BlockConfig, ModelConfig
from ppml_hybrid.errors import ConfigError, SplitError

BLOCK_TYPES = ("conv", "dense")
ACTIVATIONS = ("relu", "poly", "square", "none")
POOLS = ("max", "avg", "none")
# What CKKS can evaluate: polynomials and linear maps.
HE_ACTIVATIONS = ("poly", "square", "none")
HE_POOLS = ("avg", "none")


@dataclass(frozen=True)
class BlockShape:
    """Input and output shape of one block, per sample (no batch dimension)."""

    index: int  # 1-based, as users count blocks
    type: str
    in_shape: Tuple[int, ...]
    out_shape: Tuple[int, ...]


def _block_name(i: int, block: BlockConfig) -> str:
    return f"block {i} ({block.type}, activation={block.activation}, pool={block.pool})"


def block_shapes(model: ModelConfig, image_size: int) -> Tuple[BlockShape, ...]:
    """Check the block list and return each block's shapes for ``image_size`` inputs."""
    if not model.blocks:
        raise ConfigError(f"model {model.name!r} has no blocks")
    if model.in_channels < 1 or model.num_classes < 2:
        raise ConfigError(
            f"model.in_channels must be >= 1 and model.num_classes >= 2; got "
            f"{model.in_channels}, {model.num_classes}"
        )
    shape: Tuple[int, ...] = (model.in_channels, image_size, image_size)
    out = []
    seen_dense = False
    for i, block in enumerate(model.blocks, start=1):
        key = f"model.blocks[{i - 1}]"
        if block.type not in BLOCK_TYPES:
            raise ConfigError(f"{key}.type={block.type!r} is not one of {BLOCK_TYPES}")
        if block.activation not in ACTIVATIONS:
            raise ConfigError(f"{key}.activation={block.activation!r} is not one of {ACTIVATIONS}")
        if block.pool not in POOLS:
            raise ConfigError(f"{key}.pool={block.pool!r} is not one of {POOLS}")
        if block.out < 1:
            raise ConfigError(f"{key}.out must be >= 1, got {block.out}")
        if block.type == "conv":
            if seen_dense:
                raise ConfigError(f"{key}: a conv block cannot follow a dense block")
            c, h, w = shape
            k, p, st = block.kernel_size, block.padding, block.stride
            if k < 1 or p < 0 or st < 1:
                raise ConfigError(f"{key}: kernel_size >= 1, padding >= 0, stride >= 1 required")
            h = (h + 2 * p - k) // st + 1
            w = (w + 2 * p - k) // st + 1
            if block.pool != "none":
                if block.pool_size < 1:
                    raise ConfigError(f"{key}.pool_size must be >= 1")
                h, w = h // block.pool_size, w // block.pool_size
            if h < 1 or w < 1:
                raise ConfigError(
                    f"{key}: the feature map shrinks to {h}x{w} at data.image_size={image_size}; "
                    "use a larger image or fewer pooling blocks"
                )
            new: Tuple[int, ...] = (block.out, h, w)
        else:
            seen_dense = True
            if block.pool != "none":
                raise ConfigError(f"{key}: dense blocks have no pooling (pool={block.pool!r})")
            new = (block.out,)
        out.append(BlockShape(i, block.type, shape, new))
        shape = new
    last = model.blocks[-1]
    if last.type != "dense" or last.activation != "none" or last.out != model.num_classes:
        k = len(model.blocks) - 1
        raise ConfigError(
            f"the last block must be dense with activation none and out = model.num_classes "
            f"({model.num_classes}); got {_block_name(len(model.blocks), last)} with out={last.out}. "
            f"For N classes set both: model.num_classes=N model.blocks.{k}.out=N"
        )
    return tuple(out)


def validate_split(model: ModelConfig, split_layer: int) -> None:
    """Reject a split that is out of range or puts a comparison on the HE side."""
    n = len(model.blocks)
    if not 1 <= split_layer <= n:
        raise SplitError(
            f"split_layer={split_layer} is out of range for model {model.name!r} with {n} blocks: "
            f"use 1..{n} ({n} = every block under MPC; 0, all-HE, is not supported)"
        )
    for i, block in enumerate(model.blocks[split_layer:], start=split_layer + 1):
        if block.activation not in HE_ACTIVATIONS or block.pool not in HE_POOLS:
            bad = block.activation if block.activation not in HE_ACTIVATIONS else f"{block.pool} pooling"
            raise SplitError(
                f"split_layer={split_layer} puts {_block_name(i, block)} on the HE side, but CKKS "
                f"cannot evaluate {bad}; valid splits for model {model.name!r}: "
                f"{', '.join(map(str, valid_splits(model)))}"
            )


def valid_splits(model: ModelConfig) -> Tuple[int, ...]:
    """Every split the model allows, smallest first."""
    n = len(model.blocks)
    first = n
    for i in range(n, 0, -1):
        block = model.blocks[i - 1]
        if block.activation not in HE_ACTIVATIONS or block.pool not in HE_POOLS:
            break
        first = i - 1
    return tuple(range(max(first, 1), n + 1))
