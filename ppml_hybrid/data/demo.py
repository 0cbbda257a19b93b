"""The built-in demo set: generated offline on first use, then reused from disk.

Layout of a demo folder (loaded through the ordinary NIfTI path, like real data)::

    labels.csv                 path,label,patient_id
    subjects/sub-0001.nii.gz   int16 [stored_size, stored_size, slices_per_subject], 1 per subject
    demo.json                  generator version, seed and DemoConfig (written last)

Label 1: every slice holds one ring-enhancing lesion among 1-3 objects; label 0: only solid
nodules. See :mod:`ppml_hybrid.data.lesions` for why global intensity statistics cannot tell
them apart. Generation is deterministic in ``data.seed`` and the :class:`DemoConfig`.

Where: ``data.root`` if set, else ``<cache>/demo-v1-seed{seed}-{config hash}`` with ``<cache>``
the ``cache_dir`` argument, else ``$PPML_HYBRID_CACHE``, else ``~/.cache/ppml_hybrid``. The set
is written to a temporary sibling folder and renamed into place, so an interrupted run never
leaves a half-written set that a later run would trust; concurrent first runs (several parties
starting at once) each generate and the first rename wins.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from ppml_hybrid.config import DataConfig, DemoConfig
from ppml_hybrid.data.anatomy import FOV_MM, load_anatomy
from ppml_hybrid.data.synth import render_subject
from ppml_hybrid.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

GENERATOR = "demo-v1"
LABELS_FILE = "labels.csv"
MANIFEST_FILE = "demo.json"
CACHE_ENV = "PPML_HYBRID_CACHE"
INT16_SCALE = 1000.0  # stored as int16 (like most MR) in units of 1/1000 of the template's range


def default_cache_dir() -> Path:
    """``$PPML_HYBRID_CACHE`` if set, else ``~/.cache/ppml_hybrid``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ppml_hybrid"


def demo_config_hash(demo: DemoConfig) -> str:
    """Short stable hash of the demo's shape, so a changed DemoConfig gets its own folder."""
    text = json.dumps(dataclasses.asdict(demo), sort_keys=True)
    return hashlib.sha256(f"{GENERATOR}:{text}".encode()).hexdigest()[:12]


def demo_dir(cfg: DataConfig, *, cache_dir: Path | None = None) -> Path:
    """Folder the demo set for ``cfg`` lives in (not necessarily generated yet)."""
    if cfg.root is not None:
        return Path(cfg.root).expanduser()
    base = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return base / f"{GENERATOR}-seed{cfg.seed}-{demo_config_hash(cfg.demo)}"


def ensure_demo(cfg: DataConfig, *, cache_dir: Path | None = None) -> Path:
    """Return the demo folder for ``cfg``, generating it first if needed. Its labels are ``LABELS_FILE``."""
    check_demo_config(cfg.demo)
    target = demo_dir(cfg, cache_dir=cache_dir)
    expected = _manifest(cfg)
    if _is_complete(target, expected):
        return target
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise DataError(
            f"data.root={str(target)!r} exists but does not hold a demo set generated for seed={cfg.seed} "
            f"and this data.demo config ({MANIFEST_FILE} missing or different); delete it or choose another folder"
        )
    _generate_atomically(cfg, target, expected)
    return target


def check_demo_config(demo: DemoConfig) -> None:
    """Range checks on :class:`DemoConfig`, naming the config key."""
    checks = [
        ("data.demo.n_subjects", demo.n_subjects >= 2, "must be at least 2"),
        ("data.demo.slices_per_subject", demo.slices_per_subject >= 1, "must be at least 1"),
        ("data.demo.slices_per_subject", demo.slices_per_subject <= 64, "must be at most 64 (axial levels in the template slab)"),
        ("data.demo.stored_size", demo.stored_size >= 16 and demo.stored_size % 2 == 0, "must be an even number >= 16"),
        ("data.demo.lesion_fraction", 0.0 < demo.lesion_fraction < 1.0, "must be in (0, 1)"),
    ]
    for key, ok, why in checks:
        if not ok:
            raise ConfigError(f"{key} {why}; got {getattr(demo, key.rsplit('.', 1)[1])!r}")


def _manifest(cfg: DataConfig) -> dict:
    return {"generator": GENERATOR, "seed": cfg.seed, "demo": dataclasses.asdict(cfg.demo)}


def _is_complete(folder: Path, expected: dict) -> bool:
    manifest = folder / MANIFEST_FILE
    if not (manifest.is_file() and (folder / LABELS_FILE).is_file()):
        return False
    try:
        return json.loads(manifest.read_text()) == expected
    except (OSError, ValueError):
        return False


def _generate_atomically(cfg: DataConfig, target: Path, expected: dict) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        logger.info(
            "generating demo set (%d subjects x %d slices, seed %d) in %s",
            cfg.demo.n_subjects, cfg.demo.slices_per_subject, cfg.seed, target,
        )
        start = time.perf_counter()
        write_demo(tmp, demo=cfg.demo, seed=cfg.seed)
        (tmp / MANIFEST_FILE).write_text(json.dumps(expected, indent=2, sort_keys=True) + "\n")
        try:
            os.rename(tmp, target)  # atomic; replaces an empty folder, fails on a full one
        except OSError:
            if not _is_complete(target, expected):  # not a concurrent twin that won the race
                raise
        else:
            logger.info("demo set ready in %.1f s", time.perf_counter() - start)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def subject_labels(*, n_subjects: int, lesion_fraction: float, seed: int) -> np.ndarray:
    """Exactly ``round(lesion_fraction * n_subjects)`` lesion subjects, in a seeded random order."""
    n_lesion = int(round(lesion_fraction * n_subjects))
    n_lesion = min(max(n_lesion, 1), n_subjects - 1)
    rng = np.random.default_rng([seed, 0x1ABE1])
    return rng.permutation(np.arange(n_subjects) < n_lesion).astype(np.int64)


def write_demo(folder: Path, *, demo: DemoConfig, seed: int) -> None:
    """Generate every subject into ``folder`` (which must exist) and write ``labels.csv``."""
    import nibabel as nib

    anatomy = load_anatomy(stored_size=demo.stored_size)
    labels = subject_labels(n_subjects=demo.n_subjects, lesion_fraction=demo.lesion_fraction, seed=seed)
    width = max(4, len(str(demo.n_subjects)))
    (folder / "subjects").mkdir()
    rows = []
    pixel_mm = FOV_MM / demo.stored_size
    for i, label in enumerate(labels):
        subject = f"sub-{i + 1:0{width}d}"
        rng = np.random.default_rng([seed, i])  # per subject: independent of n_subjects
        rendered = render_subject(
            rng, anatomy=anatomy, lesion=bool(label), n_slices=demo.slices_per_subject, stored_size=demo.stored_size
        )
        data = np.clip(np.rint(rendered.volume * INT16_SCALE), -32768, 32767).astype(np.int16)
        affine = np.diag([pixel_mm, pixel_mm, rendered.slice_spacing_mm, 1.0])
        image = nib.Nifti1Image(data, affine)
        image.header.set_xyzt_units("mm")
        image.header["descrip"] = b"ppml_hybrid synthetic demo"
        relative = f"subjects/{subject}.nii.gz"
        nib.save(image, str(folder / relative))
        rows.append((relative, int(label), subject))
    with open(folder / LABELS_FILE, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["path", "label", "patient_id"])
        writer.writerows(rows)
