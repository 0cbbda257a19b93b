"""load_splits on user data (NIfTI + DICOM rows) and its configuration errors."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from ppml_hybrid.config import DataConfig
from ppml_hybrid.data import load_splits
from ppml_hybrid.errors import ConfigError, DataError


@pytest.fixture
def user_data(tmp_path, write_nifti, nibabel_data, pydicom_data):
    """8 patients: 6 synthetic NIfTI volumes (4 slices), a real NIfTI, a DICOM file and a DICOM series."""
    root = tmp_path / "site"
    root.mkdir()
    rng = np.random.default_rng(0)
    rows = ["path,label,patient_id,site"]
    for p in range(6):
        write_nifti(root / f"p{p}.nii.gz", rng.normal(size=(10, 12, 4)).astype(np.float32))
        rows.append(f"p{p}.nii.gz,{p % 2},pat{p},h{p % 2}")
    shutil.copy(nibabel_data / "anatomical.nii", root / "anat.nii")
    rows.append("anat.nii,0,pat6,h0")
    shutil.copy(pydicom_data / "CT_small.dcm", root / "ct.dcm")
    rows.append("ct.dcm,1,pat7,h1")
    (root / "series").mkdir()
    for name in ("0.dcm", "1.dcm"):
        shutil.copy(nibabel_data / name, root / "series" / name)
    rows.append("series,1,pat7,h1")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


def _cfg(root, **kw):
    return DataConfig(name="nifti", root=str(root), labels=str(root / "labels.csv"), **kw)


def test_load_user_data(user_data):
    splits = load_splits(_cfg(user_data, val_fraction=0.25, test_fraction=0.25, seed=1))
    total = 6 * 4 + 25 + 1 + 2
    sets = (splits.train, splits.val, splits.test)
    assert sum(len(s) for s in sets) == total
    for s in sets:
        assert s.images.dtype == torch.float32 and s.images.shape[1:] == (1, 32, 32)
        assert s.labels.dtype == torch.int64 and torch.isfinite(s.images).all()
    patients = [set(s.patient_ids) for s in sets]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    everything = sum((s.sources for s in sets), ())
    assert "ct.dcm#0" in everything and "series#1" in everything and "anat.nii#24" in everything
    assert set(sum((s.sites for s in sets), ())) == {"h0", "h1"}


def test_slice_range_applies(user_data):
    splits = load_splits(_cfg(user_data, val_fraction=0.0, test_fraction=0.0, slice_range=(0.5, 1.0)))
    assert len(splits.train) == 6 * 2 + 13 + 1 + 1


def test_labels_relative_to_root(user_data, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    cfg = DataConfig(name="nifti", root=str(user_data), labels="labels.csv", val_fraction=0.0, test_fraction=0.0)
    assert len(load_splits(cfg).train) > 0


def test_bad_file_in_dataset_names_it(user_data, write_nifti):
    data = np.ones((6, 6, 2), np.float32)
    data[0, 0, 0] = np.nan
    write_nifti(user_data / "p3.nii.gz", data)
    with pytest.raises(DataError, match=r"p3\.nii\.gz: 1 of 72 voxels are NaN or Inf"):
        load_splits(_cfg(user_data, val_fraction=0.0, test_fraction=0.0))


def test_wrong_shape_in_dataset(user_data, nibabel_data):
    shutil.copy(nibabel_data / "example4d.nii.gz", user_data / "p2.nii.gz")
    with pytest.raises(DataError, match=r"p2\.nii\.gz: image has shape \(128, 96, 24, 2\)"):
        load_splits(_cfg(user_data, val_fraction=0.0, test_fraction=0.0))


def test_csv_pointing_at_missing_file(user_data):
    (user_data / "p4.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labels\.csv row 6: path 'p4\.nii\.gz' does not exist"):
        load_splits(_cfg(user_data))


def test_empty_dataset(user_data):
    (user_data / "labels.csv").write_text("path,label\n")
    with pytest.raises(DataError, match="no rows; the dataset is empty"):
        load_splits(_cfg(user_data))


def test_too_few_patients_for_split(user_data):
    (user_data / "labels.csv").write_text("path,label\np0.nii.gz,0\np1.nii.gz,1\n")
    with pytest.raises(DataError, match=r"only 2 patient\(s\)"):
        load_splits(_cfg(user_data))


def test_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.root and data.labels"):
        load_splits(DataConfig(name="nifti"))
    with pytest.raises(ConfigError, match="valid: demo, nifti"):
        load_splits(DataConfig(name="mnist"))
    with pytest.raises(DataError, match="is not an existing folder"):
        load_splits(DataConfig(name="nifti", root=str(tmp_path / "nope"), labels="x.csv"))
    with pytest.raises(ConfigError, match="data.labels"):
        load_splits(DataConfig(name="demo", labels="x.csv"), cache_dir=tmp_path)
