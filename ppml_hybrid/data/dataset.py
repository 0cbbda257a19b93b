"""In-memory datasets of 2D slices and :func:`load_splits`, the data layer's entry point.

Everything is loaded eagerly: the sets this project trains on (thousands of 32x32 slices) fit
in memory many times over, every file is checked before training starts (a bad file fails the
run up front, naming the file, instead of crashing epoch 7), and the secure stages need plain
tensors anyway.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from ppml_hybrid.config import DataConfig
from ppml_hybrid.data.demo import LABELS_FILE, ensure_demo
from ppml_hybrid.data.readers import read_image
from ppml_hybrid.data.records import ImageRecord, read_labels_csv
from ppml_hybrid.data.split import RecordSplits, split_records
from ppml_hybrid.data.transforms import ExtractSlices, slice_pipeline, volume_to_slices
from ppml_hybrid.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

DATASET_NAMES = ("demo", "nifti")


@dataclass(frozen=True)
class ImageSet:
    """Slices of one split, aligned by index. ``sources`` name "file#slice" for messages, never pixels."""

    images: torch.Tensor
    """``[N, 1, S, S]`` float32, each slice z-scored."""
    labels: torch.Tensor
    """``[N]`` int64."""
    patient_ids: tuple[str, ...]
    sites: tuple[Optional[str], ...]
    sources: tuple[str, ...]

    def __post_init__(self) -> None:
        n = self.images.shape[0]
        lengths = {len(self.labels), len(self.patient_ids), len(self.sites), len(self.sources)}
        if self.images.ndim != 4 or lengths != {n}:
            raise ValueError(
                f"ImageSet fields disagree: images {tuple(self.images.shape)}, labels {len(self.labels)}, "
                f"patient_ids {len(self.patient_ids)}, sites {len(self.sites)}, sources {len(self.sources)}"
            )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @staticmethod
    def empty(*, image_size: int) -> "ImageSet":
        return ImageSet(
            images=torch.zeros((0, 1, image_size, image_size), dtype=torch.float32),
            labels=torch.zeros((0,), dtype=torch.int64),
            patient_ids=(),
            sites=(),
            sources=(),
        )


@dataclass(frozen=True)
class DataSplits:
    train: ImageSet
    val: ImageSet
    test: ImageSet


def load_splits(
    cfg: DataConfig, *, num_classes: int = 2, cache_dir: Path | None = None, progress: bool = False
) -> DataSplits:
    """Load the dataset named by ``cfg.name`` and split it by patient into train/val/test.

    ``"demo"``: the built-in synthetic set (generated on first use, see :mod:`.demo`);
    ``"nifti"``: ``cfg.labels`` (a labels CSV) with paths under ``cfg.root`` (NIfTI or DICOM).
    """
    root, labels = locate(cfg, cache_dir=cache_dir)
    return _load_folder(cfg, root=root, labels=labels, num_classes=num_classes, progress=progress)


def load_site_splits(cfg: DataConfig, *, num_classes: int = 2, progress: bool = False) -> DataSplits:
    """One hospital's own folder, split by that hospital: ``data.root`` (required) and
    ``data.labels`` (default: ``labels.csv`` in it). ``data.name`` is not consulted: every site
    holds an ordinary labelled folder (the one-machine demo writes one per site)."""
    if cfg.root is None:
        raise ConfigError("a party reads only its own site's folder: set data.root=/path/to/this/site "
                          "(and data.labels=FILE if its labels CSV is not data.root/labels.csv)")
    root = _existing_root(cfg)
    labels = _labels_file(root, cfg.labels) if cfg.labels is not None else root / LABELS_FILE
    return _load_folder(cfg, root=root, labels=labels, num_classes=num_classes, progress=progress)


def split_folder(cfg: DataConfig, *, root: Path, labels: Path,
                 num_classes: int) -> tuple[tuple[ImageRecord, ...], RecordSplits]:
    """``(records, RecordSplits)`` of one labelled folder, split as a run that loads it splits it
    (a party its own site folder): the rows only, no image read."""
    records = read_labels_csv(labels, root=root, num_classes=num_classes)
    parts = split_records(
        records,
        val_fraction=cfg.val_fraction,
        test_fraction=cfg.test_fraction,
        seed=cfg.seed,
        num_classes=num_classes,
    )
    return records, parts


def _load_folder(cfg: DataConfig, *, root: Path, labels: Path, num_classes: int, progress: bool) -> DataSplits:
    start = time.perf_counter()
    records, parts = split_folder(cfg, root=root, labels=labels, num_classes=num_classes)
    sets = {}
    for name in ("train", "val", "test"):
        sets[name] = load_image_set(
            getattr(parts, name), cfg=cfg, root=root, progress=progress, description=f"loading {name}"
        )
    splits = DataSplits(**sets)
    logger.info(
        "data %r: %d files, %d patients -> train/val/test = %d/%d/%d slices (%.1f s)",
        cfg.name,
        len(records),
        len({r.patient_id for r in records}),
        len(splits.train),
        len(splits.val),
        len(splits.test),
        time.perf_counter() - start,
    )
    return splits


def _existing_root(cfg: DataConfig) -> Path:
    root = Path(cfg.root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.root={cfg.root!r} is not an existing folder")
    return root


def _labels_file(root: Path, labels: str) -> Path:
    """``data.labels`` relative to the working directory first, then to ``data.root``."""
    path = Path(labels).expanduser()
    if not path.is_absolute() and not path.exists() and (root / path).exists():
        path = root / path
    return path


def locate(cfg: DataConfig, *, cache_dir: Path | None = None) -> tuple[Path, Path]:
    """(root, labels CSV) for ``cfg``; generates the demo set if needed."""
    if cfg.name == "demo":
        if cfg.labels is not None:
            raise ConfigError(
                f"data.labels={cfg.labels!r} is not used by the demo set (it writes its own {LABELS_FILE}); "
                f"set data.labels to null or use data=nifti"
            )
        root = ensure_demo(cfg, cache_dir=cache_dir)
        return root, root / LABELS_FILE
    if cfg.name == "nifti":
        if cfg.root is None or cfg.labels is None:
            missing = [k for k, v in (("data.root", cfg.root), ("data.labels", cfg.labels)) if v is None]
            raise ConfigError(
                f"data=nifti needs {' and '.join(missing)}: the folder holding the images and the labels CSV "
                f"(columns path,label[,patient_id][,site])"
            )
        root = _existing_root(cfg)
        return root, _labels_file(root, cfg.labels)
    raise ConfigError(f"data.name={cfg.name!r} is not a known dataset; valid: {', '.join(DATASET_NAMES)}")


def load_image_set(
    records: Sequence[ImageRecord],
    *,
    cfg: DataConfig,
    root: Path | None = None,
    progress: bool = False,
    description: str = "loading images",
) -> ImageSet:
    """Read, slice and transform ``records`` into one :class:`ImageSet` (file order, then slice order)."""
    if not records:
        return ImageSet.empty(image_size=cfg.image_size)
    pipeline = slice_pipeline(
        image_size=cfg.image_size, slice_axis=cfg.slice_axis, slice_range=cfg.slice_range, slice_step=cfg.slice_step
    )
    extractor = ExtractSlices(axis=cfg.slice_axis, slice_range=cfg.slice_range, step=cfg.slice_step)
    images, labels, patients, sites, sources = [], [], [], [], []
    for record in _progress(records, enabled=progress, description=description):
        volume = read_image(record.path)
        try:
            slices = volume_to_slices(volume, pipeline=pipeline)
        except DataError as exc:
            raise DataError(f"{record.path}: {exc}") from exc
        indices = list(extractor.indices(volume.shape))
        name = _display_path(record.path, root)
        images.append(slices)
        labels.extend([record.label] * len(indices))
        patients.extend([record.patient_id] * len(indices))
        sites.extend([record.site] * len(indices))
        sources.extend(f"{name}#{i}" for i in indices)
    return ImageSet(
        images=torch.cat(images),
        labels=torch.tensor(labels, dtype=torch.int64),
        patient_ids=tuple(patients),
        sites=tuple(sites),
        sources=tuple(sources),
    )


def _display_path(path: Path, root: Path | None) -> str:
    """Path relative to ``root`` when inside it (shorter, and no local folder names in logs)."""
    if root is not None:
        try:
            return path.relative_to(Path(os.path.abspath(root))).as_posix()
        except ValueError:
            pass
    return str(path)


def _progress(items: Sequence[ImageRecord], *, enabled: bool, description: str):
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=description, unit="file", leave=False)
