"""Slicing and per-slice transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ppml_hybrid.data.readers import read_image
from ppml_hybrid.data.transforms import (
    ExtractSlices,
    ExtractSlicesd,
    SquarePad,
    ZScoreSlices,
    ZScoreSlicesd,
    slice_indices,
    slice_pipeline,
    volume_to_slices,
)
from ppml_hybrid.errors import DataError


def test_slice_indices():
    assert list(slice_indices(10, slice_range=(0.0, 1.0), step=1)) == list(range(10))
    assert list(slice_indices(25, slice_range=(0.2, 0.6), step=2)) == [5, 7, 9, 11, 13]
    assert list(slice_indices(1, slice_range=(0.5, 0.6), step=1)) == [0]
    assert list(slice_indices(10, slice_range=(0.95, 1.0), step=3)) == [9]
    with pytest.raises(DataError):
        slice_indices(10, slice_range=(0.6, 0.2), step=1)


@pytest.mark.parametrize("axis, expected", [(0, (33, 41, 25)), (1, (41, 33, 25)), (2, (25, 33, 41))])
def test_extract_all_slices_along_axis(nibabel_data, axis, expected):
    volume = read_image(nibabel_data / "anatomical.nii")
    out = ExtractSlices(axis=axis)(volume)
    assert out.shape == expected
    np.testing.assert_array_equal(out[3], np.take(volume, 3, axis=axis))


def test_anatomical_to_model_slices(nibabel_data):
    volume = read_image(nibabel_data / "anatomical.nii")  # (33, 41, 25)
    pipeline = slice_pipeline(image_size=32, slice_axis=2, slice_range=(0.2, 0.6), slice_step=2)
    out = volume_to_slices(volume, pipeline=pipeline)
    assert out.shape == (5, 1, 32, 32) and out.dtype == torch.float32
    flat = out.reshape(5, -1).double()
    torch.testing.assert_close(flat.mean(1), torch.zeros(5, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(flat.std(1, unbiased=False), torch.ones(5, dtype=torch.float64), atol=1e-4, rtol=0)


def test_2d_image_is_one_slice_and_upsampled(pydicom_data):
    image = read_image(pydicom_data / "MR_small.dcm")  # 64x64 -> 96x96 needs bilinear upsampling
    out = volume_to_slices(image, pipeline=slice_pipeline(image_size=96))
    assert out.shape == (1, 1, 96, 96)
    assert torch.isfinite(out).all()


def test_constant_slice_is_zero_not_nan():
    volume = np.full((8, 8, 3), 7.25, np.float32)
    volume[:, :, 1] = np.arange(64, dtype=np.float32).reshape(8, 8)
    out = volume_to_slices(volume, pipeline=slice_pipeline(image_size=4))
    assert torch.isfinite(out).all()
    assert torch.count_nonzero(out[0]) == 0 and torch.count_nonzero(out[2]) == 0
    assert out[1].std() > 0.5


def test_square_pad_uses_slice_minimum():
    data = np.stack([np.full((2, 4), 5.0), np.full((2, 4), -3.0)]).astype(np.float32)
    data[0, 0, 0] = 1.0
    out = SquarePad()(data)
    assert out.shape == (2, 4, 4)
    assert out[0, 0, 0] == 1.0 and out[1, 0, 0] == -3.0  # padding rows take each slice's minimum


def test_dict_variants():
    volume = np.random.default_rng(0).normal(size=(6, 6, 4)).astype(np.float32)
    d = ExtractSlicesd(keys="image", slice_range=(0.5, 1.0))({"image": volume, "label": 1})
    assert d["image"].shape == (2, 6, 6) and d["label"] == 1
    z = ZScoreSlicesd(keys="image")(d)["image"]
    assert torch.allclose(z.reshape(2, -1).mean(1), torch.zeros(2), atol=1e-6)
    assert torch.equal(ZScoreSlices()(d["image"]), z)


def test_resize_and_pipeline_match_monai():
    """The project's resize (no MONAI import at run time) gives what MONAI's Resize gives with
    the same modes, and the dict variants run inside MONAI's own Compose."""
    import torch
    from monai.transforms import Compose as MonaiCompose
    from monai.transforms import Resize

    from ppml_hybrid.data.transforms import ResizeSquare, ResizeSquared

    g = torch.Generator().manual_seed(0)
    for m, size in ((64, 32), (48, 32), (37, 16), (16, 32), (20, 32)):
        img = torch.randn(3, m, m, generator=g)
        mode = dict(mode="area") if m > size else dict(mode="bilinear", align_corners=False)
        want = torch.as_tensor(Resize(spatial_size=(size, size), **mode)(img).as_tensor())
        assert torch.allclose(ResizeSquare(size=size)(img.numpy()), want, atol=1e-6), (m, size)
    out = MonaiCompose([ResizeSquared(keys="image", size=8)])({"image": torch.randn(2, 16, 16).numpy(), "label": 1})
    assert tuple(out["image"].shape) == (2, 8, 8) and out["label"] == 1
