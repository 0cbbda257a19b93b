"""CKKS parameters of the HE stage, with the multiplicative depth derived, never hand-set.

The depth is the deepest level any ciphertext the HE side hands back reaches, counted by
running the head's own forward and backward code on a level-counting backend (so the count
cannot drift from what is executed), plus:

* conversion levels: the SS->HE affine XOR chain costs one level per party after the first
  (``parties - 1``); every ciphertext entering E (split activations and ``delta_z``) starts there;
* spare levels for HE->SS masking: the returned ciphertext must still hold ``|v + R| <
  2^(max_mask_bits + 1)`` above the scale, so ``ceil((max_mask_bits + 2 - (first_mod_bits -
  scale_bits)) / scale_bits)`` more levels are kept (1 at the defaults 56, 60, 50).

Per-operation costs (see :mod:`ppml_hybrid.he_stage.head` for why the polynomial is folded):
a plaintext-weight linear map (dense, conv, with average pooling folded into the next linear
map) costs 1 level; ``x^2`` and ``x*g`` cost 1; ``a*x^2 + b*x`` costs 1 on the critical path
because ``a`` and ``b`` are folded into the next layer's weights (2 only on the branch that
materialises the activation for the MPC, which never exceeds the next layer's level).
For the default model at split 3 with 2 parties this gives 1 + 3 + 1 = 5, which keeps
HEStd_128_classic at ring 2^14 (6 would need 2^15, measured).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ppml_hybrid.config import HEConfig, ModelConfig
from ppml_hybrid.he_stage.errors import HEParamsError
from ppml_hybrid.model.spec import validate_split

SECURITY_LEVELS = ("HEStd_128_classic", "HEStd_192_classic", "HEStd_256_classic", "HEStd_NotSet")



@dataclass(frozen=True)
class DepthPlan:
    """Where the multiplicative depth comes from."""

    conversion_levels: int  # SS->HE XOR chain: parties - 1
    compute_levels: int  # deepest returned ciphertext, counted from a fresh conversion output
    spare_levels: int  # kept for HE->SS masking
    forward_levels: int  # deepest forward output (logits or a hidden activation)
    backward_levels: int  # deepest backward output (a delta)

    @property
    def total(self) -> int:
        return self.conversion_levels + self.compute_levels + self.spare_levels


@dataclass(frozen=True)
class CKKSParams:
    """Everything needed to build the CryptoContext; identical at K and E."""

    name: str
    security_level: str
    ring_dim: int  # 0: OpenFHE picks the smallest ring for the security level and depth
    scale_bits: int
    first_mod_bits: int
    multiplicative_depth: int
    depth_plan: DepthPlan
    insecure: bool


def spare_levels_for_masking(*, max_mask_bits: int, scale_bits: int, first_mod_bits: int) -> int:
    """Levels to keep unused so that ``v + R`` (|v + R| < 2^(max_mask_bits + 1)) still decrypts."""
    if max_mask_bits < 0:
        raise HEParamsError(f"max_mask_bits must be >= 0; got {max_mask_bits}")
    need = max_mask_bits + 2 - (first_mod_bits - scale_bits)
    return max(0, math.ceil(need / scale_bits))


def derive_params(
    *,
    he: HEConfig,
    model: ModelConfig,
    split_layer: int,
    parties: int,
) -> CKKSParams:
    """Derive the CKKS parameters for blocks ``split_layer+1..L`` run under HE."""
    _check_he_config(he)
    if parties < 2:
        raise HEParamsError(f"the MPC needs at least 2 parties; got parties={parties}")
    validate_split(model, split_layer)
    if split_layer >= len(model.blocks):
        raise HEParamsError(
            f"split_layer={split_layer} runs every block under MPC: there is no HE stage to parametrise"
        )
    from ppml_hybrid.he_stage.head import count_levels  # late: head imports this module's types

    fwd, bwd = count_levels(model=model, split_layer=split_layer)
    plan = DepthPlan(
        conversion_levels=parties - 1,
        compute_levels=max(fwd, bwd),
        spare_levels=spare_levels_for_masking(
            max_mask_bits=he.max_mask_bits, scale_bits=he.scale_bits, first_mod_bits=he.first_mod_bits
        ),
        forward_levels=fwd,
        backward_levels=bwd,
    )
    return CKKSParams(
        name=he.name,
        security_level=he.security_level,
        ring_dim=he.ring_dim,
        scale_bits=he.scale_bits,
        first_mod_bits=he.first_mod_bits,
        multiplicative_depth=plan.total,
        depth_plan=plan,
        insecure=he.insecure,
    )


def _check_he_config(he: HEConfig) -> None:
    if he.security_level not in SECURITY_LEVELS:
        raise HEParamsError(f"he.security_level={he.security_level!r} is not one of {', '.join(SECURITY_LEVELS)}")
    not_set = he.security_level == "HEStd_NotSet"
    if not_set and not (he.insecure and "insecure" in he.name):
        raise HEParamsError(
            "he.security_level=HEStd_NotSet gives no security: it is only allowed with he.insecure=true "
            f"and a name containing 'insecure' (such as he=insecure_test); got name={he.name!r}"
        )
    if he.insecure and not not_set:
        raise HEParamsError("he.insecure=true is only meaningful with he.security_level=HEStd_NotSet")
    if not_set and he.ring_dim <= 0:
        raise HEParamsError("he.ring_dim must be set (a power of two) when he.security_level=HEStd_NotSet")
    if he.ring_dim and (he.ring_dim < 16 or he.ring_dim & (he.ring_dim - 1)):
        raise HEParamsError(f"he.ring_dim must be 0 or a power of two >= 16; got {he.ring_dim}")
    if not 20 <= he.scale_bits <= 59:
        raise HEParamsError(f"he.scale_bits must be in [20, 59]; got {he.scale_bits}")
    if not he.scale_bits < he.first_mod_bits <= 60:
        raise HEParamsError(
            f"he.first_mod_bits must be in (he.scale_bits, 60]; got {he.first_mod_bits} with scale_bits {he.scale_bits}"
        )
