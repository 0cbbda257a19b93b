"""A labelled folder of real MR slices from files that ship inside installed packages, for the
README's own-data path (``data=nifti``). Nothing is downloaded; nothing is synthetic.

    .venv/bin/python benchmarks/real_images.py --out /tmp/real_mr
    .venv/bin/python benchmarks/hybrid_accuracy.py --real-images /tmp/real_mr [--seeds ...]

Task: **series orientation**, axial (label 0) against coronal (label 1), the sorting a PACS
import does when a series arrives without a usable ImageOrientationPatient. The images:

* nilearn's MNI152 ICBM 2009a symmetric template (1 mm): the T1 image and the grey- and
  white-matter probability maps, each cut into axial and coronal slices;
* nibabel's ``anatomical.nii`` (one subject's T1, 2 mm), likewise.

Why this task: no labelled clinical set ships in the lock's packages, and every label built
from these few volumes is either a property of the file (T1 against tissue map: trivially
separable) or of the slice's position. Orientation is a real label of a real image, easy
without privacy (98-99% for the default model, ``dp=off``) and not under DP with 740
training slices (epsilon about 6 at ``hybrid_accuracy.py``'s schedule for this set): the DP
comparison then measures something. Slices hold at least ``MIN_BRAIN_FRACTION`` of
brain (the T1 template's tissue maps decide for all three images of the template; nibabel's
subject by its own intensities). Rows of one plane of one image are grouped in slabs of
``SLAB`` consecutive slices (``patient_id``), so the patient-level split keeps neighbouring,
nearly identical slices on one side.

Each slice is written as a 2D NIfTI (float32, identity affine) and ``labels.csv`` lists
``path,label,patient_id,split``: the split is fixed per slab (70/15/15 by a hash of its name),
so a hybrid run (each party splits its own site's rows) and a plaintext run (one split of all
rows) train and test on the same slices; ``SOURCES.txt`` names every source file with its package version.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.metadata
import importlib.util
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from ppml_hybrid.data.anatomy import template_path  # noqa: E402
from ppml_hybrid.data.demo import default_cache_dir  # noqa: E402

LABELS = {"axial": 0, "coronal": 1}
SLAB = 8
MIN_BRAIN_FRACTION = 0.05
VERSION = "real-mr-v2"  # a new name whenever what prepare() writes changes
# Fixed split per slab (the ``split`` column), so that every arm of a comparison trains and is
# tested on the same slices: without it each party of a hybrid run splits its own site's rows
# while a plaintext run splits the union, and on a set this small the two test sets differ in
# what matters (edge slices, the small subject volume).
SPLIT_FRACTIONS = (("train", 0.70), ("val", 0.15), ("test", 0.15))


def default_folder() -> Path:
    """Where ``hybrid_accuracy.py --real-images`` (no folder named) keeps the set: beside the demo."""
    return default_cache_dir() / VERSION


def ensure(out: Path) -> Path:
    """``out`` as a finished set (``SOURCES.txt`` is written last): reused, or written now."""
    if not (Path(out) / "SOURCES.txt").is_file():
        prepare(out)
    return Path(out)


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"error: {package} is not installed; run ./test.sh once to set up .venv")
    path = Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)
    if not path.is_file():
        raise SystemExit(f"error: {path} is missing from the installed {package}; reinstall it")
    return path


def _ras(path: Path) -> np.ndarray:
    import nibabel as nib

    image = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(image.dataobj, dtype=np.float32)


def _planes(volume: np.ndarray, brain: np.ndarray) -> Iterator[Tuple[str, int, np.ndarray]]:
    """(plane, index, 2D slice) for every axial (z) and coronal (y) slice with enough brain."""
    for plane, axis in (("axial", 2), ("coronal", 1)):
        for k in range(volume.shape[axis]):
            mask = np.take(brain, k, axis=axis)
            if mask.mean() >= MIN_BRAIN_FRACTION:
                yield plane, k, np.ascontiguousarray(np.take(volume, k, axis=axis))


def _sources() -> List[Tuple[str, Path, str]]:
    nib_file = _package_file("nibabel", "tests", "data", "anatomical.nii")
    return [
        ("mni_t1", template_path("t1"), "nilearn"),
        ("mni_gm", template_path("gm"), "nilearn"),
        ("mni_wm", template_path("wm"), "nilearn"),
        ("nibabel_anat", nib_file, "nibabel"),
    ]


def prepare(out: Path) -> Dict[str, int]:
    """Write the slices, ``labels.csv`` and ``SOURCES.txt`` into ``out`` (which must be empty or
    absent); returns the number of rows per plane. Written in a sibling folder and renamed into
    place, so an interrupted run leaves no half-written set."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SystemExit(f"error: {out} is not empty; give a new folder (nothing was written)")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        counts = _write(work)
        if out.exists():
            out.rmdir()  # empty, checked above
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return counts


def _write(out: Path) -> Dict[str, int]:
    import nibabel as nib

    (out / "slices").mkdir()
    sources = _sources()
    volumes = {name: _ras(path) for name, path, _ in sources}
    template_brain = (volumes["mni_gm"] + volumes["mni_wm"]) > 0.5 * 255.0
    subject = volumes["nibabel_anat"]
    subject_brain = subject > np.percentile(subject, 60)
    rows, counts = [], {plane: 0 for plane in LABELS}
    for name, _, _ in sources:
        brain = subject_brain if name == "nibabel_anat" else template_brain
        for plane, k, pixels in _planes(volumes[name], brain):
            rel = f"slices/{name}_{plane}_{k:03d}.nii.gz"
            nib.save(nib.Nifti1Image(pixels, np.eye(4)), str(out / rel))
            slab = f"{name}-{plane}-{k // SLAB:02d}"
            rows.append((rel, LABELS[plane], slab, _split_of(slab)))
            counts[plane] += 1
    with open(out / "labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "patient_id", "split"])
        writer.writerows(rows)
    with open(out / "SOURCES.txt", "w") as f:
        f.write("Real MR images shipped inside installed packages (written by benchmarks/real_images.py)\n")
        for name, path, package in sources:
            f.write(f"{name}: {package} {importlib.metadata.version(package)}: {path.name}\n")
        f.write(f"labels: {LABELS}; slabs of {SLAB} slices share a patient_id; slices with >= "
                f"{MIN_BRAIN_FRACTION:.0%} brain\n")
    return counts


def _split_of(slab: str) -> str:
    """train/val/test for a slab, by a stable hash of its name (the same on every machine)."""
    u = int.from_bytes(hashlib.sha256(slab.encode()).digest()[:8], "big") / 2.0 ** 64
    edge = 0.0
    for name, fraction in SPLIT_FRACTIONS:
        edge += fraction
        if u < edge:
            return name
    return SPLIT_FRACTIONS[-1][0]


def main(argv: List[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="new folder for the slices and labels.csv")
    args = parser.parse_args(argv)
    counts = prepare(args.out)
    print(f"wrote {sum(counts.values())} slices ({', '.join(f'{n} {p}' for p, n in counts.items())}) "
          f"to {args.out}; train with data=nifti data.root={args.out} data.labels={args.out}/labels.csv")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
