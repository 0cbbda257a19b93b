"""NIfTI and DICOM reading, shape rules and bad-file errors."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pydicom
import pydicom.errors
import pytest

from ppml_hybrid.data.readers import read_image
from ppml_hybrid.errors import DataError


def test_nifti_3d_from_nibabel(nibabel_data):
    volume = read_image(nibabel_data / "anatomical.nii")
    assert volume.shape == (33, 41, 25)
    assert volume.dtype == np.float32


def test_nifti_gz(nibabel_data):
    assert read_image(nibabel_data / "standard.nii.gz").shape == (4, 5, 7)


def test_true_4d_is_rejected_with_shape(nibabel_data):
    with pytest.raises(DataError) as err:
        read_image(nibabel_data / "example4d.nii.gz")
    message = str(err.value)
    assert "example4d.nii.gz" in message and "(128, 96, 24, 2)" in message and "2 volumes" in message


def test_singleton_trailing_axes_are_squeezed(tmp_path, write_nifti):
    ramp = np.arange(6 * 7 * 5, dtype=np.float32)
    assert read_image(write_nifti(tmp_path / "a.nii.gz", ramp.reshape(6, 7, 5, 1))).shape == (6, 7, 5)
    assert read_image(write_nifti(tmp_path / "b.nii", ramp[:42].astype(np.int16).reshape(6, 7, 1))).shape == (6, 7)


def test_1d_is_rejected(tmp_path, write_nifti):
    with pytest.raises(DataError, match=r"c\.nii.*shape \(8, 1, 1\)"):
        read_image(write_nifti(tmp_path / "c.nii", np.ones((8, 1, 1), np.float32)))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf_voxels_name_the_file(tmp_path, write_nifti, bad):
    data = np.ones((5, 5, 3), np.float32)
    data[1, 2, 0] = bad
    with pytest.raises(DataError, match=r"bad\.nii\.gz: 1 of 75 voxels are NaN or Inf"):
        read_image(write_nifti(tmp_path / "bad.nii.gz", data))


def test_corrupt_nifti(tmp_path):
    path = tmp_path / "corrupt.nii.gz"
    path.write_bytes(b"this is not a nifti file")
    with pytest.raises(DataError, match="corrupt.nii.gz: cannot read NIfTI"):
        read_image(path)


def test_truncated_nifti(tmp_path, nibabel_data):
    path = tmp_path / "cut.nii"
    path.write_bytes((nibabel_data / "anatomical.nii").read_bytes()[:1000])
    with pytest.raises(DataError, match="cut.nii"):
        read_image(path)


def test_unsupported_suffix(tmp_path):
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG")
    with pytest.raises(DataError, match="scan.png: unsupported file type"):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nope.nii.gz"):
        read_image(tmp_path / "nope.nii.gz")


def test_dicom_single_files(pydicom_data):
    ct = read_image(pydicom_data / "CT_small.dcm")
    mr = read_image(pydicom_data / "MR_small.dcm")
    assert ct.shape == (128, 128) and mr.shape == (64, 64)
    raw = pydicom.dcmread(pydicom_data / "CT_small.dcm").pixel_array
    # Rescale intercept -1024 applied; [columns, rows] (NIfTI order) reoriented to RAS: an axial
    # slice (rows along L, columns along P) has both axes flipped
    np.testing.assert_allclose(ct, raw.T[::-1, ::-1].astype(np.float32) - 1024.0)


@pytest.mark.parametrize("name", ["CT_small.dcm", "MR_small.dcm"])
def test_dicom_is_oriented_as_nibabel_orients_it(pydicom_data, name):
    """Against an independent reference: nibabel's own DICOM affine (LPS, made RAS) and its
    closest-canonical reorientation, the rule NIfTI files are read by."""
    import warnings

    import nibabel as nib
    from nibabel.nicom import dicomwrappers

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nibabel calls its DICOM wrappers experimental
        w = dicomwrappers.wrapper_from_file(str(pydicom_data / name))
        affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ w.affine
        ref = np.asarray(nib.as_closest_canonical(nib.Nifti1Image(w.get_data()[:, :, None], affine)).dataobj)
    np.testing.assert_allclose(read_image(pydicom_data / name), ref[:, :, 0], rtol=1e-6)


def test_a_mirrored_or_feet_first_series_reads_as_the_same_anatomy(tmp_path, pydicom_data):
    """The same slices stored with the rows mirrored (row direction negated) and in reverse slice
    order along a negated normal give the same RAS volume."""
    def write(folder: Path, mirror: bool) -> None:
        folder.mkdir()
        for n in range(3):
            ds = pydicom.dcmread(pydicom_data / "MR_small.dcm")
            pixels = ds.pixel_array + 10 * n
            orient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            if mirror:  # columns stored right-to-left; the normal flips with the row direction
                pixels = pixels[:, ::-1]
                orient = [-1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
            ds.PixelData = np.ascontiguousarray(pixels).astype(ds.pixel_array.dtype).tobytes()
            ds.ImageOrientationPatient = orient
            ds.ImagePositionPatient = [0.0, 0.0, 5.0 * n]
            ds.InstanceNumber = n + 1
            ds.save_as(folder / f"s{n}.dcm")

    write(tmp_path / "plain", mirror=False)
    write(tmp_path / "mirrored", mirror=True)
    np.testing.assert_array_equal(read_image(tmp_path / "plain"), read_image(tmp_path / "mirrored"))


def _series(folder: Path, source: Path, offsets: list[int]) -> None:
    """Copies of ``source`` at z = offset, pixel data shifted by 10 * offset, names in reverse order."""
    folder.mkdir()
    for n, offset in enumerate(offsets):
        ds = pydicom.dcmread(source)
        ds.PixelData = (ds.pixel_array + 10 * offset).astype(ds.pixel_array.dtype).tobytes()
        position = [float(v) for v in ds.ImagePositionPatient]
        ds.ImagePositionPatient = [position[0], position[1], position[2] + 5.0 * offset]
        ds.InstanceNumber = offset + 1
        ds.save_as(folder / f"img{len(offsets) - n:03d}.dcm")


def test_dicom_series_folder_sorted_by_position(tmp_path, pydicom_data):
    folder = tmp_path / "series"
    _series(folder, pydicom_data / "CT_small.dcm", [2, 0, 3, 1])
    volume = read_image(folder)
    assert volume.shape == (128, 128, 4)
    means = volume.mean(axis=(0, 1))
    assert np.all(np.diff(means) > 9)  # slice k carries +10*k: sorted by position, not file name


def test_dicom_series_from_nibabel(nibabel_data, tmp_path):
    folder = tmp_path / "nib_series"
    folder.mkdir()
    for name in ("0.dcm", "1.dcm"):
        shutil.copy(nibabel_data / name, folder / name)
    assert read_image(folder).shape == (256, 256, 2)


def test_dicom_two_series_rejected(tmp_path, pydicom_data):
    folder = tmp_path / "mixed"
    folder.mkdir()
    shutil.copy(pydicom_data / "CT_small.dcm", folder / "a.dcm")
    shutil.copy(pydicom_data / "MR_small.dcm", folder / "b.dcm")
    with pytest.raises(DataError, match="mixed: folder holds 2 DICOM series"):
        read_image(folder)


def test_dicom_duplicate_positions_rejected(tmp_path, pydicom_data):
    folder = tmp_path / "dup"
    folder.mkdir()
    shutil.copy(pydicom_data / "CT_small.dcm", folder / "a.dcm")
    shutil.copy(pydicom_data / "CT_small.dcm", folder / "b.dcm")
    with pytest.raises(DataError, match="same ImagePositionPatient"):
        read_image(folder)


def test_empty_dicom_folder(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty: folder holds no DICOM files"):
        read_image(tmp_path / "empty")


def test_corrupt_dicom(tmp_path):
    path = tmp_path / "broken.dcm"
    path.write_bytes(b"\x00" * 64)
    with pytest.raises(DataError, match="broken.dcm"):
        read_image(path)


def test_dicom_is_recognised_by_content_not_only_by_name(pydicom_data, tmp_path):
    """pydicom's MR700 series has bare-number file names (as PACS exports do): a folder of them
    is one series, and a single such file (or one renamed IM0001) reads as DICOM."""
    series = pydicom_data / "dicomdirtests" / "98892003" / "MR700"
    volume = read_image(series)
    assert volume.ndim == 3 and volume.shape[2] == len(list(series.iterdir()))
    single = tmp_path / "IM0001"
    single.write_bytes((series / "4467").read_bytes())
    assert read_image(single).shape == (16, 16)
    not_dicom = tmp_path / "notes"
    not_dicom.write_bytes(b"x" * 200)
    with pytest.raises(DataError, match="notes: unsupported file type"):
        read_image(not_dicom)


def test_a_constant_volume_is_refused_naming_the_file(tmp_path):
    import nibabel as nib
    import numpy as np

    path = tmp_path / "blank.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 4), dtype=np.float32), np.eye(4)), str(path))
    with pytest.raises(DataError, match="blank.nii.gz: every voxel has the same value"):
        read_image(path)


def test_nifti_in_las_and_ras_read_the_same_anatomy(nibabel_data, tmp_path):
    """nibabel's anatomical.nii is stored LAS; the same scan stored RAS (axis 0 flipped, affine
    to match) must read voxel for voxel the same: no silent mirroring between sites' exports."""
    import nibabel as nib

    las = nib.load(str(nibabel_data / "anatomical.nii"))
    assert nib.aff2axcodes(las.affine) == ("L", "A", "S")
    ras = nib.as_closest_canonical(las)
    assert nib.aff2axcodes(ras.affine) == ("R", "A", "S")
    nib.save(nib.Nifti1Image(np.asarray(ras.dataobj), ras.affine), str(tmp_path / "ras.nii"))
    a, b = read_image(nibabel_data / "anatomical.nii"), read_image(tmp_path / "ras.nii")
    assert a.shape == b.shape and np.array_equal(a, b)
    raw = np.asarray(las.get_fdata(dtype=np.float32))
    assert np.array_equal(a, raw[::-1])  # LAS -> RAS flips the first axis


def _compressed_greyscale(folder: Path) -> list:
    """pydicom's own test files (shipped in its wheel) in every compressed transfer syntax it has."""
    out = []
    for f in sorted(folder.glob("*.dcm")):
        try:
            ds = pydicom.dcmread(f, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:  # pydicom's deliberately broken files
            continue
        syntax = ds.file_meta.get("TransferSyntaxUID")
        if syntax is not None and syntax.is_compressed and int(ds.get("SamplesPerPixel", 1)) == 1 and \
                "UN_sequence" not in f.name:
            out.append(f.name)
    return out


PYDICOM_FILES = Path(pydicom.__file__).parent / "data" / "test_files"
# streams pydicom keeps as decoder edge cases (not standard-conforming): a clear error naming the file
NON_CONFORMING = {"JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"}


@pytest.mark.parametrize("name", _compressed_greyscale(PYDICOM_FILES))
def test_every_compressed_transfer_syntax_in_pydicom_reads(name):
    """JPEG baseline/extended, JPEG-LS lossless and near-lossless, JPEG 2000 (lossless and not), RLE:
    the decoders in the lock read every greyscale file pydicom ships; the lossless encodings of
    MR_small give its pixels exactly."""
    path = PYDICOM_FILES / name
    if name in NON_CONFORMING:
        with pytest.raises(DataError, match=f"{name}: cannot decode DICOM pixel data.*re-export it uncompressed"):
            read_image(path)
        return
    image = read_image(path)
    ds = pydicom.dcmread(path)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = (ds.Columns, ds.Rows) + ((frames,) if frames > 1 else ())
    assert image.shape == expected and np.isfinite(image).all()
    if name in ("MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"):
        np.testing.assert_array_equal(image, read_image(PYDICOM_FILES / "MR_small.dcm"))


def test_the_compressed_set_covers_every_family():
    syntaxes = {pydicom.dcmread(PYDICOM_FILES / n, stop_before_pixels=True).file_meta.TransferSyntaxUID.name
                for n in _compressed_greyscale(PYDICOM_FILES)}
    for family in ("JPEG 2000", "JPEG-LS", "JPEG Extended", "RLE"):
        assert any(family in s for s in syntaxes), (family, syntaxes)
