"""One synthetic subject: a stack of axial MNI152 slices with subject-level variation and lesions.

Per subject (one random generator per subject, so subjects are independent of each other and
of how many are generated): a small random in-plane affine (rotation, anisotropic scale,
shift), a contiguous run of axial levels with random spacing, a smooth multiplicative bias
field, a gamma curve and a noise level. Per slice: 1-3 objects (:mod:`lesions`) placed inside
the brain, apart from each other; for a lesion subject exactly one of them is a ring lesion.

Everything except the ring/nodule arrangement is drawn the same way for both labels (the
choice of which object is the ring is drawn even for label 0), so nothing but local structure
carries the label. The bias field is taken as constant over each object's footprint (its value
at the object's centre): a field varying across the footprint would scale a ring's rim and a
nodule's core differently and leak the label into the histogram.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

from ppml_hybrid.data.anatomy import CENTRE_VOX, FOV_MM, Anatomy
from ppml_hybrid.data.lesions import Blob, draw_blobs


@dataclass(frozen=True)
class SynthParams:
    """Ranges of the random variation (coarse-grid pixels for sizes; T1 units, WM ~ 0.85)."""

    rotation_deg: float = 12.0
    scale: tuple[float, float] = (0.9, 1.1)
    anisotropy: float = 0.05
    shift_mm: float = 6.0
    slice_spacing_mm: tuple[int, int] = (3, 5)
    gamma: tuple[float, float] = (0.8, 1.25)
    bias: float = 0.2
    noise: tuple[float, float] = (0.01, 0.04)
    objects: tuple[int, int] = (1, 3)
    radius: tuple[float, float] = (3.8, 4.8)
    max_aspect: float = 1.15
    # Object centres are at least this fraction of the largest half-axis inside the brain edge.
    edge_margin: float = 0.6
    bright: tuple[float, float] = (1.1, 1.4)
    dark: tuple[float, float] = (0.1, 0.35)
    dark_fraction: float = 0.45


@dataclass(frozen=True)
class SubjectVolume:
    volume: np.ndarray
    """``[stored_size, stored_size, slices]`` float32 intensities."""
    slice_spacing_mm: float


def render_subject(
    rng: np.random.Generator, *, anatomy: Anatomy, lesion: bool, n_slices: int, stored_size: int,
    params: SynthParams = SynthParams(),
) -> SubjectVolume:
    """Render one subject; ``lesion`` decides only whether one object per slice is a ring."""
    p = params
    size = stored_size
    grid = size // 2
    n_z = anatomy.t1.shape[2]
    theta = np.deg2rad(rng.uniform(-p.rotation_deg, p.rotation_deg))
    scale = rng.uniform(*p.scale)
    sx = scale * rng.uniform(1 - p.anisotropy, 1 + p.anisotropy)
    sy = scale * rng.uniform(1 - p.anisotropy, 1 + p.anisotropy)
    shift = rng.uniform(-p.shift_mm, p.shift_mm, 2)
    dz = int(rng.integers(p.slice_spacing_mm[0], p.slice_spacing_mm[1] + 1))
    dz = max(1, min(dz, (n_z - 1) // max(n_slices - 1, 1)))
    z_start = int(rng.integers(0, n_z - dz * (n_slices - 1)))
    gamma = float(np.exp(rng.uniform(np.log(p.gamma[0]), np.log(p.gamma[1]))))
    bias = rng.uniform(-p.bias, p.bias, 3)
    noise = rng.uniform(*p.noise)

    pixel_mm = FOV_MM / size
    c, s = np.cos(theta), np.sin(theta)
    matrix = np.array([[c, -s], [s, c]]) @ np.diag([1 / sx, 1 / sy]) * (pixel_mm / anatomy.voxel_mm)
    offset = np.array(CENTRE_VOX) + shift - matrix @ np.full(2, (size - 1) / 2)
    yy, xx = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1
    field = np.exp(bias[0] * xx + bias[1] * yy + bias[2] * (xx**2 + yy**2 - 2 / 3))
    field_coarse = field.reshape(grid, 2, grid, 2).mean(axis=(1, 3))

    levels = [z_start + k * dz for k in range(n_slices)]
    tissues, brains = _resample(anatomy, levels=levels, matrix=matrix, offset=offset, size=size)
    volume = np.zeros((size, size, n_slices), dtype=np.float32)
    for k in range(n_slices):
        tissue, brain = tissues[k], brains[k] > 0.5
        blobs = _place_blobs(rng, brain=brain, grid=grid, lesion=lesion, params=p)
        values, owner = draw_blobs(blobs, grid=grid, dark_fraction=p.dark_fraction)
        # Bias field constant over each footprint: its value at the blob's centre (see above).
        centre_field = np.array([field_coarse[_cell(b.centre[0], grid), _cell(b.centre[1], grid)] for b in blobs] + [0.0])
        obj_field = centre_field[owner]
        up = np.ones((2, 2))
        foot_fine = np.kron(owner >= 0, up) > 0
        image = np.where(foot_fine, np.kron(values, up), tissue)
        image = np.where(foot_fine, np.kron(obj_field, up), field) * np.clip(image, 0.0, None)
        image = image**gamma + rng.normal(0.0, noise, image.shape)
        volume[:, :, k] = np.abs(image)
    return SubjectVolume(volume=volume, slice_spacing_mm=float(dz))


def _resample(
    anatomy: Anatomy, *, levels: list[int], matrix: np.ndarray, offset: np.ndarray, size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bilinear resampling of the template slices at ``levels`` onto the ``size x size`` output grid.

    Output pixel ``o`` samples template voxel ``matrix @ o + offset`` (zero outside), as
    ``scipy.ndimage.affine_transform(order=1)`` would, but in one ``grid_sample`` call for all
    slices and both maps (about 10x faster).
    """
    import torch
    import torch.nn.functional as F

    out = np.stack(np.meshgrid(np.arange(size), np.arange(size), indexing="ij"), axis=-1).reshape(-1, 2)
    src = out @ matrix.T + offset  # template voxel coordinates (x, y) of each output pixel
    shape = anatomy.t1.shape[:2]
    norm = 2.0 * src / (np.array(shape, dtype=np.float64) - 1.0) - 1.0
    grid = torch.as_tensor(norm[:, ::-1].copy(), dtype=torch.float64).reshape(1, size, size, 2)
    stack = np.stack([anatomy.t1[:, :, levels], anatomy.brain[:, :, levels]], axis=0)  # [2, X, Y, k]
    source = torch.as_tensor(np.moveaxis(stack, 3, 0).copy(), dtype=torch.float64)  # [k, 2, X, Y]
    sampled = F.grid_sample(
        source, grid.expand(len(levels), -1, -1, -1), mode="bilinear", padding_mode="zeros", align_corners=True
    ).numpy()
    return sampled[:, 0], sampled[:, 1]


def _cell(coordinate: float, grid: int) -> int:
    return min(max(int(coordinate), 0), grid - 1)


def _place_blobs(
    rng: np.random.Generator, *, brain: np.ndarray, grid: int, lesion: bool, params: SynthParams
) -> list[Blob]:
    """Sample 1-3 non-overlapping objects inside the brain; one is a ring lesion iff ``lesion``.

    The same random draws happen for both labels, so placement, sizes and intensities have the
    same distribution in both classes.
    """
    p = params
    n_objects = int(rng.integers(p.objects[0], p.objects[1] + 1))
    extent = p.radius[1] * p.max_aspect  # largest footprint half-axis, coarse px
    depth = ndi.distance_transform_edt(brain) / 2.0  # distance to the brain edge, coarse px
    depth_coarse = depth.reshape(grid, 2, grid, 2).min(axis=(1, 3))
    candidates = np.argwhere(depth_coarse >= p.edge_margin * extent)
    centres: list[np.ndarray] = []
    for _ in range(n_objects):
        pool = candidates
        if centres and len(pool):
            placed = np.asarray(centres)
            gap = np.sqrt(((pool[:, None, :] + 0.5 - placed[None]) ** 2).sum(-1)).min(axis=1)
            pool = pool[gap >= 2 * extent + 2]
        if len(pool) == 0:
            if not centres:  # tiny brain section: use its deepest point
                pool = np.argwhere(depth_coarse == depth_coarse.max())
            else:
                break
        centres.append(pool[int(rng.integers(len(pool)))] + 0.5 + rng.uniform(-0.5, 0.5, 2))
    ring_index = int(rng.integers(len(centres)))  # drawn for both labels on purpose
    blobs = []
    for i, centre in enumerate(centres):
        blobs.append(
            Blob(
                centre=(float(centre[0]), float(centre[1])),
                radius=float(rng.uniform(*p.radius)),
                aspect=float(rng.uniform(1.0, p.max_aspect)),
                angle=float(rng.uniform(0.0, np.pi)),
                bright=float(rng.uniform(*p.bright)),
                dark=float(rng.uniform(*p.dark)),
                ring=lesion and i == ring_index,
            )
        )
    return blobs
