"""Slot layout: pack/unpack round trips and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from ppml_hybrid.he_stage import LayoutError, SlotLayout, choose_layout


@pytest.mark.parametrize("batch,groups", [(1, None), (5, None), (256, None), (256, 1), (8192, None)])
def test_round_trip(batch, groups):
    lay = choose_layout(slots=8192, batch_capacity=batch, max_groups=groups)
    assert lay.block * lay.groups <= 8192 and lay.block >= batch
    x = np.random.default_rng(0).standard_normal((batch, 37))
    vecs = lay.pack(values=x)
    assert len(vecs) == lay.num_ciphertexts(37) and all(v.shape == (8192,) for v in vecs)
    assert np.array_equal(lay.unpack(vectors=vecs, n_features=37, batch=batch), x)


def test_batch_256_on_ring_2_14_packs_32_features_per_ciphertext():
    lay = choose_layout(slots=8192, batch_capacity=256)
    assert (lay.block, lay.groups, lay.num_ciphertexts(512)) == (256, 32, 16)


def test_errors():
    with pytest.raises(LayoutError, match="does not fit"):
        choose_layout(slots=1024, batch_capacity=2048)
    lay = SlotLayout(slots=1024, block=8, groups=4)
    with pytest.raises(LayoutError, match="passes"):
        lay.pack(values=np.zeros((9, 3)))
    with pytest.raises(LayoutError, match="powers of two"):
        SlotLayout(slots=1024, block=6, groups=4)
