"""Labels CSV parsing: every bad input names the CSV, the row and the value."""

from __future__ import annotations

import numpy as np
import pytest

from ppml_hybrid.data.records import read_labels_csv
from ppml_hybrid.errors import DataError


@pytest.fixture
def images(tmp_path, write_nifti):
    for name in ("a.nii.gz", "b.nii.gz", "c.nii.gz"):
        write_nifti(tmp_path / name, np.ones((4, 4, 2), np.float32))
    return tmp_path


def _csv(folder, text):
    path = folder / "labels.csv"
    path.write_text(text)
    return path


def test_reads_rows_with_optional_columns(images):
    path = _csv(images, "path,label,patient_id,site\na.nii.gz,0,p1,h1\nb.nii.gz,1,p1,\nc.nii.gz,1.0,,h2\n")
    records = read_labels_csv(path, root=images)
    assert [r.label for r in records] == [0, 1, 1]
    assert [r.patient_id for r in records] == ["p1", "p1", "c.nii.gz"]  # empty id -> the path
    assert [r.site for r in records] == ["h1", None, "h2"]
    assert [r.row for r in records] == [2, 3, 4]
    assert records[0].path == images / "a.nii.gz"


def test_missing_patient_column_uses_path(images):
    records = read_labels_csv(_csv(images, "Label,PATH\n1,a.nii.gz\n0,b.nii.gz\n"))
    assert [r.patient_id for r in records] == ["a.nii.gz", "b.nii.gz"]
    assert all(r.site is None for r in records)


def test_absolute_paths_inside_data_root_are_read(images):
    path = _csv(images, f"path,label\n{images / 'a.nii.gz'},1\n")
    assert read_labels_csv(path, root=images)[0].path == images / "a.nii.gz"


@pytest.mark.parametrize("how", ["absolute", "dotdot", "symlink"])
def test_paths_leading_outside_data_root_are_refused(images, tmp_path_factory, how):
    """A site's labels CSV names only files inside its own data folder (no other site's scans)."""
    import shutil

    other = tmp_path_factory.mktemp("other_site")
    shutil.copy(images / "a.nii.gz", other / "scan.nii.gz")
    if how == "absolute":
        entry = str(other / "scan.nii.gz")
    elif how == "dotdot":
        entry = f"../{other.name}/scan.nii.gz"
    else:
        (images / "link.nii.gz").symlink_to(other / "scan.nii.gz")
        entry = "link.nii.gz"
    path = _csv(images, f"path,label\n{entry},1\n")
    with pytest.raises(DataError, match=r"row 2: path .* leads outside data\.root"):
        read_labels_csv(path, root=images)


@pytest.mark.parametrize(
    "text, pattern",
    [
        ("path,label\na.nii.gz,\n", r"labels\.csv row 2: label is empty"),
        ("path,label\na.nii.gz,0\nb.nii.gz,yes\n", r"labels\.csv row 3: label 'yes' is not an integer"),
        ("path,label\na.nii.gz,0.5\n", r"row 2: label '0.5' is not an integer"),
        ("path,label\na.nii.gz,2\n", r"row 2: label 2 is not a known class; expected 0..1"),
        ("path,label\na.nii.gz,-1\n", r"row 2: label -1 is not a known class"),
        ("path,label\na.nii.gz,0\n\nmissing.nii.gz,1\n", r"row 4: path 'missing.nii.gz' does not exist"),
        ("path,label\na.nii.gz,0\n./a.nii.gz,1\n", r"row 3: path './a.nii.gz' is a duplicate of row 2"),
        ("path,label\n,0\n", r"row 2: path is empty"),
        ("path,label\na.nii.gz,0,extra\n", r"row 2: has 3 field\(s\) but the header has 2"),
        ("file,label\na.nii.gz,0\n", r"labels\.csv row 1: missing column\(s\) path"),
        ("path,diagnosis\na.nii.gz,0\n", r"missing column\(s\) label"),
        ("path;label\na.nii.gz;0\n", r"row 1: the header 'path;label' is separated by ';'; the labels CSV must be comma"),
        ("path,label\n", r"labels\.csv: has a header but no rows; the dataset is empty"),
        ("", r"labels\.csv is empty \(no header row\)"),
    ],
)
def test_bad_csv(images, text, pattern):
    with pytest.raises(DataError, match=pattern):
        read_labels_csv(_csv(images, text), root=images)


def test_num_classes(images):
    path = _csv(images, "path,label\na.nii.gz,2\n")
    assert read_labels_csv(path, num_classes=3)[0].label == 2


def test_missing_csv(tmp_path):
    with pytest.raises(DataError, match=r"labels CSV .*nope\.csv does not exist"):
        read_labels_csv(tmp_path / "nope.csv")


def test_binary_csv(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes(b"\xff\xfe\x00\x81binary")
    with pytest.raises(DataError, match=r"labels\.csv"):
        read_labels_csv(path)
