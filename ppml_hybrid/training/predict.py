"""Apply a trained model to new scans: ``python -m ppml_hybrid predict --model model.pt SCAN...``.

Steps, on the host that holds the scans (the model is public, the scans never leave):

1. read ``model.pt`` (written by every run: weights, the model config, image size, the split
   clip and, since this version, the data geometry: slice axis, range and step);
2. read each scan (NIfTI, a DICOM file, or a folder holding one DICOM series) through the same
   readers and slicing transforms as training;
3. score every slice; a scan's probability of class c is the mean over its slices, its
   prediction the most probable class;
4. with ``saliency_dir``: one PNG per slice with a class-activation overlay
   (:mod:`ppml_hybrid.training.saliency`). The weights are the run's DP-released model, so all of
   this runs in plaintext on the host holding the scans.

Unreadable files are errors naming the file (nothing skipped); the model file is loaded with
``weights_only=True`` (a model file from elsewhere cannot run code).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch

from ppml_hybrid.config import DataConfig, ModelConfig, from_mapping
from ppml_hybrid.errors import ConfigError, DataError


@dataclass(frozen=True)
class ScanPrediction:
    scan: str
    slices: int
    probabilities: Tuple[float, ...]  # per class, mean over the scan's slices

    @property
    def predicted(self) -> int:
        return max(range(len(self.probabilities)), key=lambda c: self.probabilities[c])


@dataclass(frozen=True)
class SavedModel:
    model: Any  # BlockModel, eval mode
    config: ModelConfig
    data: DataConfig


def load_saved_model(path: Path) -> SavedModel:
    """``model.pt`` as written by a run (module doc, step 1)."""
    from ppml_hybrid.model import build_model

    if not path.is_file():
        raise ConfigError(f"--model {path}: no such file (a run writes model.pt into its output folder)")
    try:
        saved = torch.load(path, weights_only=True)
        config = from_mapping(ModelConfig, saved["model"], "model")
        image_size = int(saved["image_size"])
        geometry = dict(saved.get("data") or {})  # older model files: the default slicing
        data = DataConfig(image_size=image_size, slice_axis=int(geometry.get("slice_axis", 2)),
                          slice_range=tuple(float(v) for v in geometry.get("slice_range", (0.0, 1.0))),
                          slice_step=int(geometry.get("slice_step", 1)))
        split_clip = saved.get("split_clip")
        model = build_model(config, image_size=image_size, seed=0,
                            split_clip=tuple(split_clip) if split_clip is not None else None)
        model.load_state_dict(saved["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise ConfigError(f"--model {path} is not a model file written by ppml_hybrid ({type(exc).__name__}: "
                          f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    model.eval()
    return SavedModel(model=model, config=config, data=data)


@torch.no_grad()
def predict_scans(saved: SavedModel, scans: Sequence[Path], *, slice_axis: Optional[int] = None,
                  saliency_dir: Optional[Path] = None) -> List[ScanPrediction]:
    """Steps 2-3 of the module doc for every scan, in order."""
    from ppml_hybrid.data.readers import read_image
    from ppml_hybrid.data.transforms import slice_pipeline, volume_to_slices

    d = saved.data
    pipeline = slice_pipeline(image_size=d.image_size, slice_axis=d.slice_axis if slice_axis is None else slice_axis,
                              slice_range=tuple(d.slice_range), slice_step=d.slice_step)
    out = []
    for scan in scans:
        volume = read_image(scan)
        try:
            slices = volume_to_slices(volume, pipeline=pipeline)
        except DataError as exc:
            raise DataError(f"{scan}: {exc}") from exc
        probs = torch.softmax(saved.model(slices).double(), dim=1).mean(dim=0)
        if saliency_dir is not None:
            from ppml_hybrid.training.saliency import overlay_all

            overlay_all(saved.model, Path(scan), slices, saliency_dir)
        out.append(ScanPrediction(scan=str(scan), slices=len(slices), probabilities=tuple(float(p) for p in probs)))
    return out


def as_rows(predictions: Sequence[ScanPrediction]) -> List[Dict[str, Any]]:
    return [{"scan": p.scan, "slices": p.slices, "predicted": p.predicted,
             **{f"p{c}": round(v, 6) for c, v in enumerate(p.probabilities)}} for p in predictions]
