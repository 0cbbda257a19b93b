"""Data layer: labels CSV, NIfTI/DICOM readers, slicing transforms, patient split, demo set.

``load_splits(cfg.data)`` is the entry point; see DESIGN.md section 9. Nothing here logs or
prints pixel values: messages name files, rows, shapes and counts only.
"""

from ppml_hybrid.data.baselines import intensity_baseline_accuracy, intensity_features
from ppml_hybrid.data.dataset import DataSplits, ImageSet, load_image_set, load_site_splits, load_splits
from ppml_hybrid.data.demo import ensure_demo
from ppml_hybrid.data.readers import read_image
from ppml_hybrid.data.records import ImageRecord, read_labels_csv
from ppml_hybrid.data.split import split_records

__all__ = [
    "DataSplits",
    "ImageRecord",
    "ImageSet",
    "ensure_demo",
    "intensity_baseline_accuracy",
    "intensity_features",
    "load_image_set",
    "load_site_splits",
    "load_splits",
    "read_image",
    "read_labels_csv",
    "split_records",
]
