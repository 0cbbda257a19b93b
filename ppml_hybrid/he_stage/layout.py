"""How a batch of feature vectors sits in CKKS slots.

A ciphertext's ``S`` slots are cut into ``G`` groups of ``B`` slots (``B`` a power of two that
holds the batch, ``G * B`` dividing ``S``; the pattern is tiled ``S / (G*B)`` times so that
cyclic rotations by multiples of ``B`` act on the groups). Feature ``f`` of sample ``i`` lives
in ciphertext ``f // G``, slot ``(f % G) * B + i``.

``G = 1`` is the design's default "samples in slots": one ciphertext per feature, a linear layer
is a weighted sum of ciphertexts and needs no rotation. ``G > 1`` packs ``G`` features per
ciphertext, cutting ciphertext counts, encryptions and traffic by ``G`` at the price of
rotations; at batch 256 on ring 2^14 (``G = 32``) that is several times faster (see
``benchmarks/README.md``), so :func:`choose_layout` uses the largest ``G`` by default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from ppml_hybrid.he_stage.errors import LayoutError


def _is_pow2(v: int) -> bool:
    return v >= 1 and v & (v - 1) == 0


def next_pow2(v: int) -> int:
    return 1 << max(0, (int(v) - 1).bit_length())


@dataclass(frozen=True)
class SlotLayout:
    """Slot layout shared by every ciphertext of one run (fixed at key generation)."""

    slots: int
    block: int  # B: slots per group = largest batch this layout holds
    groups: int  # G: features per ciphertext

    def __post_init__(self) -> None:
        if not (_is_pow2(self.slots) and _is_pow2(self.block) and _is_pow2(self.groups)):
            raise LayoutError(f"slots, block and groups must be powers of two; got {self}")
        if self.block * self.groups > self.slots:
            raise LayoutError(f"block * groups must fit the {self.slots} slots; got {self.block} * {self.groups}")

    @property
    def capacity(self) -> int:
        """Largest batch one pass holds."""
        return self.block

    def num_ciphertexts(self, n_features: int) -> int:
        return -(-n_features // self.groups)

    def pack(self, *, values: np.ndarray) -> list:
        """(batch, features) -> one slot vector per ciphertext (float64, length ``slots``)."""
        x = np.asarray(values, dtype=np.float64)
        if x.ndim != 2:
            raise LayoutError(f"pack expects a (batch, features) array; got shape {x.shape}: flatten samples first")
        batch, n = x.shape
        if batch > self.block:
            raise LayoutError(
                f"batch of {batch} does not fit the layout's {self.block} slots per group: split it into "
                f"passes of at most {self.block}, or build the layout for a larger batch"
            )
        k = self.num_ciphertexts(n)
        grid = np.zeros((k * self.groups, self.block))
        grid[:n, :batch] = x.T
        grid = grid.reshape(k, self.groups * self.block)
        reps = self.slots // (self.groups * self.block)
        return [np.tile(row, reps) for row in grid]

    def unpack(self, *, vectors: Sequence[np.ndarray], n_features: int, batch: int) -> np.ndarray:
        """Inverse of :meth:`pack` (reads the first tile)."""
        if len(vectors) != self.num_ciphertexts(n_features):
            raise LayoutError(
                f"{n_features} features need {self.num_ciphertexts(n_features)} ciphertexts; got {len(vectors)}"
            )
        if not 0 < batch <= self.block:
            raise LayoutError(f"batch must be in 1..{self.block}; got {batch}")
        width = self.groups * self.block
        grid = np.stack([np.asarray(v, dtype=np.float64)[:width] for v in vectors])
        grid = grid.reshape(-1, self.block)[:n_features, :batch]
        return grid.T.copy()


def choose_layout(*, slots: int, batch_capacity: int, max_groups: Optional[int] = None) -> SlotLayout:
    """Layout for batches of up to ``batch_capacity`` samples: as many groups as fit.

    ``max_groups=1`` forces samples-in-slots (one feature per ciphertext).
    """
    if batch_capacity < 1:
        raise LayoutError(f"batch_capacity must be >= 1; got {batch_capacity}")
    block = next_pow2(batch_capacity)
    if block > slots:
        raise LayoutError(
            f"a batch of {batch_capacity} does not fit {slots} slots: use batches of at most {slots} "
            "or a larger ring (he.ring_dim)"
        )
    groups = slots // block
    if max_groups is not None:
        if max_groups < 1:
            raise LayoutError(f"max_groups must be >= 1; got {max_groups}")
        groups = min(groups, 1 << (max_groups.bit_length() - 1))
    return SlotLayout(slots=slots, block=block, groups=groups)
