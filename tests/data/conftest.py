"""Shared fixtures for the data-layer tests: small files shipped inside nibabel and pydicom.

Paths are built from the installed packages directly (no ``get_testdata_file`` lookups that
could fall back to a download).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def nibabel_data() -> Path:
    path = Path(nib.__file__).parent / "tests" / "data"
    assert (path / "anatomical.nii").is_file()
    return path


@pytest.fixture(scope="session")
def pydicom_data() -> Path:
    path = Path(pydicom.__file__).parent / "data" / "test_files"
    assert (path / "CT_small.dcm").is_file() and (path / "MR_small.dcm").is_file()
    return path


def _write_nifti(path: Path, data: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(np.asarray(data), np.eye(4)), str(path))
    return path


@pytest.fixture
def write_nifti():
    """``write_nifti(path, array) -> path``: a NIfTI file with an identity affine."""
    return _write_nifti
