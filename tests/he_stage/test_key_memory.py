"""Key sets that would not fit in memory are refused with a clear error, before they are made."""

from __future__ import annotations

import pytest

from ppml_hybrid.he_stage.errors import KeyMaterialError
from ppml_hybrid.he_stage.keys import KEY_COPIES, available_memory_bytes, check_key_memory


def test_a_key_set_beyond_available_memory_is_refused_with_its_size():
    mb = 2 ** 20
    # poly_cnn at split 1: ring 2^16, 112 keys of about 60 MB (measured shape of the failure)
    with pytest.raises(KeyMaterialError, match=r"112 evaluation keys of 60 MB at ring 2\^16.*larger split_layer"):
        check_key_memory(key_bytes=60 * mb, keys=112, ring_dim=2 ** 16, available_bytes=20 * 2 ** 30)
    # the same set fits where KEY_COPIES copies fit; unknown memory is not refused
    check_key_memory(key_bytes=60 * mb, keys=112, ring_dim=2 ** 16, available_bytes=KEY_COPIES * 112 * 60 * mb)
    check_key_memory(key_bytes=60 * mb, keys=112, ring_dim=2 ** 16, available_bytes=None)


def test_available_memory_is_read_on_linux():
    avail = available_memory_bytes()
    assert avail is None or avail > 0
