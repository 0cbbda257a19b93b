"""What one party learns from the messages it receives does not depend on the others' inputs.

Party 1 (the observer) keeps its own rows fixed while party 0 inputs two very different
secret batches (all zeros; all 3.0). For each batch the observer records every value it
opens (the received share combined with its own: exactly what the messages tell it) during
a forward+backward through a ReLU/max-pool block, a polynomial/avg-pool block and dense
layers. A chi-square test of homogeneity on each byte of the 64-bit values compares the two
runs: the protocol passes (the opened values are masked by dealer randomness). The positive
control plants a leak (an unmasked opening of party 0's input, and one masked only by noise
in [-1, 1)) into the same run, and the same test must flag it.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chi2_contingency

from ppml_hybrid.smpc_stage.launcher import run_parties
from ppml_hybrid.smpc_stage.programs import ViewProbe
from smpc_helpers import MODEL_A, reference, smpc

SAMPLES = 200_000
ALPHA = 1e-4  # per byte test; 8 bytes -> family-wise false alarm below 1e-3


def byte_homogeneity_pvalues(a: torch.Tensor, b: torch.Tensor) -> list:
    """p-value per byte position that ``a`` and ``b`` come from the same distribution."""
    n = min(a.numel(), b.numel(), SAMPLES)
    assert n > 10_000, "too few opened values to test"
    a, b = a[:n].numpy().view(np.uint64), b[:n].numpy().view(np.uint64)
    out = []
    for byte in range(8):
        ha = np.bincount(((a >> np.uint64(8 * byte)) & np.uint64(255)).astype(np.int64), minlength=256)
        hb = np.bincount(((b >> np.uint64(8 * byte)) & np.uint64(255)).astype(np.int64), minlength=256)
        keep = (ha + hb) > 0
        if keep.sum() < 2:
            out.append(1.0)  # the same single value in both runs
            continue
        out.append(chi2_contingency(np.stack([ha[keep], hb[keep]]))[1])
    return out


def _views(plant):
    size = 16
    net, _, _, _ = reference(MODEL_A, image_size=size, parties=2, rows_per_party=4)
    g = torch.Generator().manual_seed(5)
    observer_rows = torch.randn(4, 1, size, size, generator=g)
    secret = {"zeros": torch.zeros(4, 1, size, size), "threes": torch.full((4, 1, size, size), 3.0)}
    inputs = [secret, {k: observer_rows for k in secret}]
    probe = ViewProbe(model=MODEL_A, state_dict=net.state_dict(), image_size=size, stop=4, observer=1, plant=plant)
    run = run_parties(smpc=smpc(2), program=probe, party_inputs=inputs)
    return run.results[1]


def leak_flagged(views) -> bool:
    """The check: some byte of the opened values is distributed differently (p < ALPHA)."""
    return min(byte_homogeneity_pvalues(views["zeros"], views["threes"])) < ALPHA


def test_received_messages_independent_of_other_party_input():
    views = _views(plant=None)
    assert not leak_flagged(views), byte_homogeneity_pvalues(views["zeros"], views["threes"])


@pytest.mark.parametrize("plant", [0.0, 1.0], ids=["unmasked", "weak-mask"])
def test_planted_leak_is_caught(plant):
    views = _views(plant=plant)  # the same run as above plus one planted opening (2,048 values, 1,024 of them party 0's)
    assert leak_flagged(views)
    # With margin: 1,024 leaked values among the 200,000 tested are found decisively.
    assert min(byte_homogeneity_pvalues(views["zeros"], views["threes"])) < 1e-12
