"""The run facts K and E must agree on to build the same HE head, and building it from them."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from ppml_hybrid.config import HEConfig, ModelConfig, from_mapping
from ppml_hybrid.errors import ConfigError
from ppml_hybrid.he_stage.head import HEHead
from ppml_hybrid.he_stage.layout import SlotLayout, choose_layout
from ppml_hybrid.he_stage.params import CKKSParams, derive_params


@dataclass(frozen=True)
class HERunSpec:
    """The run facts K and E both need to agree on the HE head (same values at both)."""

    he: HEConfig
    model: ModelConfig
    split_layer: int
    image_size: int
    parties: int
    batch_capacity: int  # largest batch one pass holds (fixes the slot layout)
    max_groups: Optional[int] = None  # 1 forces samples-in-slots; None: as many as fit

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "HERunSpec":
        try:
            return cls(he=from_mapping(HEConfig, raw["he"], "he"), model=from_mapping(ModelConfig, raw["model"], "model"),
                       split_layer=int(raw["split_layer"]), image_size=int(raw["image_size"]),
                       parties=int(raw["parties"]), batch_capacity=int(raw["batch_capacity"]),
                       max_groups=None if raw.get("max_groups") is None else int(raw["max_groups"]))
        except KeyError as exc:
            raise ConfigError(f"launch spec lacks {exc.args[0]!r}") from exc




def run_params(*, spec: HERunSpec) -> CKKSParams:
    """CKKS parameters, depth derived from the head (with the spare levels the widest mask needs)."""
    return derive_params(he=spec.he, model=spec.model, split_layer=spec.split_layer, parties=spec.parties)


def run_layout(*, spec: HERunSpec, slots: int) -> SlotLayout:
    return choose_layout(slots=slots, batch_capacity=spec.batch_capacity, max_groups=spec.max_groups)


def run_head(*, spec: HERunSpec, layout: SlotLayout) -> HEHead:
    return HEHead(model=spec.model, split_layer=spec.split_layer, image_size=spec.image_size, layout=layout)


# The whole run's statistical distance over every masked slot stays at most 2^-UNION_BITS.
UNION_BITS = 10
# The widest default the error budget allows: each bit of hiding doubles what decoding adds to a
# returned value (about 2^(V + H - 48)); measured on a mid-training step of the default model
# (benchmarks/hybrid_gradient_error.py --hiding-bits 32 36 40 44), the error in the released sums
# is 0.05% / 0.14% / 1.3% / 5% of the DP noise at H = 32 / 36 / 40 / 44: H = 38 stays near 0.4%.
DEFAULT_HIDING_BITS = 38


def masked_slot_budget(hiding_bits: int) -> int:
    """How many masked slots K may decrypt in one lifetime with H bits of hiding: the union bound
    ``slots * 2^-H <= 2^-UNION_BITS`` (K refuses submissions beyond it; see keyservice.rounds)."""
    return 2 ** max(0, hiding_bits - UNION_BITS)


def resolved_hiding(run: HERunSpec) -> HERunSpec:
    """``run`` with ``he.mask_hiding_bits`` resolved from the config alone: the configured H, or
    :data:`DEFAULT_HIDING_BITS`. Every role computes the same spec without knowing the data
    size; K enforces the matching lifetime budget (:func:`masked_slot_budget`)."""
    if run.he.mask_hiding_bits is not None:
        return run
    return dataclasses.replace(run, he=dataclasses.replace(run.he, mask_hiding_bits=DEFAULT_HIDING_BITS))
