"""MONAI-style transforms from a 2D image or 3D volume to model-ready 2D slices.

Pipeline (:func:`slice_pipeline`), applied once per file for speed, with the slices of a volume
riding in the channel axis until the very end:

1. :class:`ExtractSlices` -- 2D image: one slice; 3D volume: slices along ``axis`` over the
   fractional range ``[start, stop)`` with ``step`` -> channel-first ``[k, H, W]``.
2. :class:`SquarePad` -- pad each slice to a square with its own minimum (air stays air, so
   CT at -1024 HU is not framed by a bright border), keeping the aspect ratio.
3. :class:`ResizeSquare` -- resize to ``size x size``; area averaging when shrinking
   (anti-aliasing), bilinear when enlarging (what MONAI's ``Resize`` does with those modes: a
   test compares the two).
4. :class:`ZScoreSlices` -- per-slice z-score. Per-image normalisation removes scanner gain and
   offset, so a model (or an attacker on the features) cannot key on global brightness.

:func:`volume_to_slices` returns float32 ``[k, 1, size, size]``. Dict variants (``...d``) are
provided for pipelines over dictionaries (MONAI's ``Compose`` takes them as they are).

The transforms follow MONAI's array/dictionary pattern without importing MONAI: importing it
loads every MONAI submodule (pandas, matplotlib, scipy.signal: 8 s here), which every party,
``train.py`` and each role process paid at start for one resize.
"""

from __future__ import annotations

import math
from typing import Hashable, Mapping, Sequence

import numpy as np
import torch

from ppml_hybrid.errors import DataError


class Transform:
    """An array transform: a callable on one image (MONAI's pattern)."""

    def __call__(self, img):  # pragma: no cover - every subclass defines it
        raise NotImplementedError


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms = list(transforms)

    def __call__(self, data):
        for t in self.transforms:
            data = t(data)
        return data


class MapTransform:
    """A dictionary transform over ``keys`` (a missing key is an error unless ``allow_missing_keys``)."""

    def __init__(self, keys, allow_missing_keys: bool = False) -> None:
        self.keys = (keys,) if isinstance(keys, (str, int)) else tuple(keys)
        self.allow_missing_keys = allow_missing_keys

    def key_iterator(self, data: Mapping[Hashable, object]):
        for key in self.keys:
            if key in data:
                yield key
            elif not self.allow_missing_keys:
                raise KeyError(f"key {key!r} is not in the data ({sorted(map(str, data))}); "
                               "set allow_missing_keys=True to skip it")


def slice_indices(length: int, *, slice_range: tuple[float, float], step: int) -> range:
    """Indices of the slices taken from an axis of ``length`` voxels.

    ``[floor(start * length), ceil(stop * length))`` with ``step``: never empty for a valid
    range (``0 <= start < stop <= 1``), so even a 1-slice volume yields its slice.
    """
    start, stop = slice_range
    if not 0.0 <= start < stop <= 1.0:
        raise DataError(f"slice_range must be [start, stop) with 0 <= start < stop <= 1; got {slice_range!r}")
    if step < 1:
        raise DataError(f"slice_step must be at least 1; got {step}")
    first = min(int(math.floor(start * length)), length - 1)
    last = max(int(math.ceil(stop * length)), first + 1)
    return range(first, min(last, length), step)


class ExtractSlices(Transform):
    """2D ``[H, W]`` or 3D ``[X, Y, Z]`` (no channel axis) -> channel-first slices ``[k, H, W]``."""

    def __init__(self, *, axis: int = 2, slice_range: tuple[float, float] = (0.0, 1.0), step: int = 1) -> None:
        if axis not in (0, 1, 2, -1, -2, -3):
            raise DataError(f"slice_axis must be 0, 1 or 2; got {axis}")
        self.axis = axis % 3
        self.slice_range = (float(slice_range[0]), float(slice_range[1]))
        self.step = int(step)
        slice_indices(2, slice_range=self.slice_range, step=self.step)  # validate early

    def indices(self, shape: Sequence[int]) -> range:
        """The slice indices this transform takes from an image of ``shape``."""
        if len(shape) == 2:
            return range(1)
        return slice_indices(int(shape[self.axis]), slice_range=self.slice_range, step=self.step)

    def __call__(self, img: np.ndarray) -> np.ndarray:
        data = np.asarray(img, dtype=np.float32)
        if data.ndim == 2:
            return data[None]
        if data.ndim != 3:
            raise DataError(f"expected a 2D image or 3D volume, got shape {tuple(data.shape)}")
        picked = np.take(data, list(self.indices(data.shape)), axis=self.axis)
        return np.ascontiguousarray(np.moveaxis(picked, self.axis, 0))


class SquarePad(Transform):
    """Pad channel-first ``[k, H, W]`` to ``[k, M, M]`` (``M = max(H, W)``), centred, with each slice's minimum."""

    def __call__(self, img: np.ndarray) -> np.ndarray:
        data = np.asarray(img, dtype=np.float32)
        _, h, w = data.shape
        m = max(h, w)
        if h == w:
            return data
        out = np.empty((data.shape[0], m, m), dtype=np.float32)
        out[...] = data.reshape(data.shape[0], -1).min(axis=1)[:, None, None]
        top, left = (m - h) // 2, (m - w) // 2
        out[:, top : top + h, left : left + w] = data
        return out


class ResizeSquare(Transform):
    """Resize square ``[k, M, M]`` to ``[k, size, size]``: area when shrinking, bilinear when enlarging."""

    def __init__(self, *, size: int) -> None:
        if size < 1:
            raise DataError(f"image_size must be positive; got {size}")
        self.size = int(size)

    def __call__(self, img: np.ndarray | torch.Tensor) -> torch.Tensor:
        data = torch.as_tensor(np.asarray(img, dtype=np.float32))
        m = data.shape[-1]
        if m == self.size:
            return data
        size = (self.size, self.size)
        if m > self.size:  # area averaging: every source pixel counts (no aliasing)
            out = torch.nn.functional.interpolate(data[None], size=size, mode="area")
        else:
            out = torch.nn.functional.interpolate(data[None], size=size, mode="bilinear", align_corners=False)
        return out[0].to(torch.float32)


class ZScoreSlices(Transform):
    """Per-channel (= per-slice) z-score; a (near-)constant slice becomes all zeros, never NaN.

    MONAI's ``NormalizeIntensity`` only guards an exactly-zero std; float rounding on a constant
    slice can leave a tiny std that blows the slice up to +-1, so the tolerance here is relative.
    """

    def __init__(self, *, rel_eps: float = 1e-6) -> None:
        self.rel_eps = float(rel_eps)

    def __call__(self, img: np.ndarray | torch.Tensor) -> torch.Tensor:
        data = torch.as_tensor(np.asarray(img, dtype=np.float32) if not torch.is_tensor(img) else img)
        flat = data.reshape(data.shape[0], -1).to(torch.float64)
        mean = flat.mean(dim=1, keepdim=True)
        std = flat.std(dim=1, unbiased=False, keepdim=True)
        scale = torch.clamp(flat.abs().amax(dim=1, keepdim=True), min=1.0)
        flat_ok = std > self.rel_eps * scale
        out = torch.where(flat_ok, (flat - mean) / torch.where(flat_ok, std, torch.ones_like(std)), torch.zeros_like(flat))
        return out.to(torch.float32).reshape(data.shape)


def slice_pipeline(
    *, image_size: int, slice_axis: int = 2, slice_range: tuple[float, float] = (0.0, 1.0), slice_step: int = 1
) -> Compose:
    """The array pipeline: image -> ``[k, image_size, image_size]`` float32 tensor of z-scored slices."""
    return Compose(
        [
            ExtractSlices(axis=slice_axis, slice_range=slice_range, step=slice_step),
            SquarePad(),
            ResizeSquare(size=image_size),
            ZScoreSlices(),
        ]
    )


def volume_to_slices(volume: np.ndarray, *, pipeline: Compose) -> torch.Tensor:
    """Apply ``pipeline`` and add the model's channel axis: ``[k, 1, S, S]`` float32, contiguous."""
    out = pipeline(volume)
    return torch.as_tensor(out, dtype=torch.float32).unsqueeze(1).contiguous()


class _ArrayToDict(MapTransform):
    """Apply an array transform to each key; the base for the dict variants below."""

    transform: Transform

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.transform(d[key])
        return d


class ExtractSlicesd(_ArrayToDict):
    """Dict variant of :class:`ExtractSlices`."""

    def __init__(self, keys, *, axis: int = 2, slice_range=(0.0, 1.0), step: int = 1, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.transform = ExtractSlices(axis=axis, slice_range=slice_range, step=step)


class SquarePadd(_ArrayToDict):
    """Dict variant of :class:`SquarePad`."""

    def __init__(self, keys, *, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.transform = SquarePad()


class ResizeSquared(_ArrayToDict):
    """Dict variant of :class:`ResizeSquare`."""

    def __init__(self, keys, *, size: int, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.transform = ResizeSquare(size=size)


class ZScoreSlicesd(_ArrayToDict):
    """Dict variant of :class:`ZScoreSlices`."""

    def __init__(self, keys, *, rel_eps: float = 1e-6, allow_missing_keys: bool = False):
        super().__init__(keys, allow_missing_keys)
        self.transform = ZScoreSlices(rel_eps=rel_eps)
