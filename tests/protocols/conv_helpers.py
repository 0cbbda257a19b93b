"""Shared pieces of the conversion tests: small insecure CKKS keys, decryption (test side only)."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from dataclasses import dataclass
from typing import Any

import numpy as np

from ppml_hybrid.config import SMPCConfig
from ppml_hybrid.he_stage.backends import CKKSTensor
from ppml_hybrid.he_stage.codec import decrypt_batch
from ppml_hybrid.he_stage.context import build_context
from ppml_hybrid.he_stage.keys import generate_keys
from ppml_hybrid.he_stage.layout import choose_layout
from ppml_hybrid.he_stage.params import CKKSParams, DepthPlan

# Stated tolerance of SS->HE against the exact sum of the parties' clamped shares (/2^16):
# CKKS at scale 2^50, ring 2^11: measured ~2^-30; the bound leaves ample room and is still far
# below CrypTen's resolution 2^-16.
SS_TO_HE_TOL = 2.0 ** -22


@dataclass
class Keys:
    secret: Any
    public: Any  # PublicMaterial (picklable, sent to the parties)
    cc: Any


def insecure_keys(*, parties: int, batch: int, max_groups: int | None = 4, spare_levels: int = 1) -> Keys:
    """he=insecure_test-like parameters (ring 2048, scale 2^50) with the chain's n-1 levels."""
    plan = DepthPlan(conversion_levels=parties - 1, compute_levels=0, spare_levels=spare_levels,
                     forward_levels=0, backward_levels=0)
    params = CKKSParams(name="insecure_test", security_level="HEStd_NotSet", ring_dim=2048, scale_bits=50,
                        first_mod_bits=60, multiplicative_depth=plan.total, depth_plan=plan, insecure=True)
    ctx = build_context(params=params)
    layout = choose_layout(slots=ctx.info.slots, batch_capacity=batch, max_groups=max_groups)
    secret, public = generate_keys(context=ctx, layout=layout, rotation_indices=())
    return Keys(secret=secret, public=public, cc=ctx.cc)


def decrypt(keys: Keys, tensor: CKKSTensor, batch: int) -> np.ndarray:
    return decrypt_batch(cc=keys.cc, secret_key=keys.secret.secret_key, tensor=tensor, batch=batch)


def smpc(parties: int, timeout_s: float = 60.0) -> SMPCConfig:
    return SMPCConfig(parties=parties, master_port=0, timeout_s=timeout_s)


def sum_int64(*arrays: np.ndarray) -> np.ndarray:
    total = np.zeros(np.asarray(arrays[0]).shape, dtype=np.uint64)
    for a in arrays:
        total += np.asarray(a, dtype=np.int64).view(np.uint64)
    return total.view(np.int64)
