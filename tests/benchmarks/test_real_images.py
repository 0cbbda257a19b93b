"""benchmarks/real_images.py: real MR slices from installed packages, read back through the
own-data path (data=nifti) exactly as hybrid_accuracy.py --real-images trains on them."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_config import run_config  # noqa: E402
from real_images import LABELS, prepare  # noqa: E402

from ppml_hybrid.data import load_splits  # noqa: E402


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("real") / "mr"
    return out, prepare(out)


def test_the_folder_loads_through_the_own_data_path(real_folder):
    out, counts = real_folder
    assert set(counts) == set(LABELS) and min(counts.values()) > 300  # both planes, hundreds each
    cfg = run_config(["data=nifti", f"data.root={out}", f"data.labels={out / 'labels.csv'}"])
    splits = load_splits(cfg.data)
    sets = (splits.train, splits.val, splits.test)
    assert sum(len(s.labels) for s in sets) == sum(counts.values())
    for s in sets:  # every split holds both planes, 32x32 slices
        assert set(s.labels.tolist()) == {0, 1} and tuple(s.images.shape[1:]) == (1, 32, 32)
    # a slab (patient_id) never straddles two splits, and every source image is used
    slabs = [set(s.patient_ids) for s in sets]
    assert not (slabs[0] & slabs[1] or slabs[0] & slabs[2] or slabs[1] & slabs[2])
    sources = {src.split("/")[-1].split("_axial")[0].split("_coronal")[0] for s in sets for src in s.sources}
    assert sources == {"mni_t1", "mni_gm", "mni_wm", "nibabel_anat"}


def test_labels_follow_the_plane_and_sources_are_named(real_folder):
    out, _ = real_folder
    with open(out / "labels.csv") as f:
        rows = list(csv.DictReader(f))
    split_of_slab = {}
    for row in rows:
        plane = "axial" if "_axial_" in row["path"] else "coronal"
        assert int(row["label"]) == LABELS[plane] and row["patient_id"].split("-")[1] == plane
        # the split is fixed per slab, so every arm (and every site of a hybrid run) uses the same
        assert split_of_slab.setdefault(row["patient_id"], row["split"]) == row["split"]
    assert sorted(set(split_of_slab.values())) == ["test", "train", "val"]
    text = (out / "SOURCES.txt").read_text()
    assert "nilearn" in text and "nibabel" in text and "anatomical.nii" in text


def test_a_non_empty_folder_is_refused_and_left_alone(tmp_path):
    (tmp_path / "keep.txt").write_text("mine")
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "real_images.py"), "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "not empty" in proc.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]
