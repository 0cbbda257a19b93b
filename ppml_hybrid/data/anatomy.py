"""Real anatomy for the demo set: the MNI152 (ICBM 2009a symmetric) T1 template and tissue maps
that ship inside nilearn's wheel, read from disk, never downloaded.

The files are found with ``importlib.util.find_spec`` so nilearn (slow to import) is not imported.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ppml_hybrid.errors import DataError

TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
# Axial template slices used (1 mm voxels, from the top of the cerebellum to the upper
# centrum semiovale): large brain cross-sections with ventricles, WM and cortex.
Z_RANGE = (58, 128)
# In-plane centre of the brain in template voxels and the field of view sampled around it.
CENTRE_VOX = (98.0, 118.0)
FOV_MM = 192.0


@dataclass(frozen=True)
class Anatomy:
    """Template slab, pre-smoothed in-plane for resampling to ``stored_size`` pixels."""

    t1: np.ndarray
    """``[X, Y, Z]`` float32 T1 intensities scaled to [0, 1]."""
    brain: np.ndarray
    """``[X, Y, Z]`` float32 brain mask (GM + WM, ventricles filled) after the same smoothing."""
    voxel_mm: float = 1.0


def template_path(kind: str) -> Path:
    """Path of one bundled template file (``t1``, ``gm`` or ``wm``); DataError if absent."""
    spec = importlib.util.find_spec("nilearn")
    name = TEMPLATE_FILES[kind]
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"the demo set needs nilearn's bundled MNI152 template ({name}); install nilearn")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "data" / name
    if not path.is_file():
        raise DataError(f"the demo set needs {path} (bundled with nilearn) but it is missing; reinstall nilearn")
    return path


def load_anatomy(*, stored_size: int) -> Anatomy:
    """Load the T1 and brain mask, cropped to :data:`Z_RANGE` and smoothed against aliasing."""
    import nibabel as nib
    from scipy import ndimage as ndi

    z0, z1 = Z_RANGE
    try:
        t1 = np.asarray(nib.load(str(template_path("t1"))).dataobj[:, :, z0:z1], dtype=np.float32) / 255.0
        gm = np.asarray(nib.load(str(template_path("gm"))).dataobj[:, :, z0:z1], dtype=np.float32) / 255.0
        wm = np.asarray(nib.load(str(template_path("wm"))).dataobj[:, :, z0:z1], dtype=np.float32) / 255.0
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read nilearn's bundled MNI152 template: {type(exc).__name__}: {exc}") from exc
    mask = np.stack([ndi.binary_fill_holes(m) for m in np.moveaxis(gm + wm > 0.5, 2, 0)], axis=2)
    sigma = 0.45 * FOV_MM / stored_size  # Gaussian pre-filter for the downsampling to stored_size
    t1 = ndi.gaussian_filter(t1, (sigma, sigma, 0))
    brain = ndi.gaussian_filter(mask.astype(np.float32), (sigma, sigma, 0))
    return Anatomy(t1=t1, brain=brain)
