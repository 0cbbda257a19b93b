"""Patient-level train/val/test split, stratified by label, deterministic from a seed.

All rows of a patient land in one split: slices of one patient are strongly correlated, so a
slice-level split would leak the test set into training and inflate every metric. The split
depends only on the seed and the set of (patient, label) pairs, not on the CSV's row order.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ppml_hybrid.data.records import ImageRecord
from ppml_hybrid.errors import DataError


@dataclass(frozen=True)
class RecordSplits:
    train: tuple[ImageRecord, ...]
    val: tuple[ImageRecord, ...]
    test: tuple[ImageRecord, ...]


def split_records(
    records: Sequence[ImageRecord],
    *,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    num_classes: int = 2,
) -> RecordSplits:
    """Split ``records`` by patient into train/val/test.

    Counts: ``round(fraction * patients)``, at least one patient for a non-zero fraction; the
    counts are shared out over the label strata by largest remainder, keeping one patient of
    each class for train where possible. A patient's stratum is its most common label.
    """
    if not records:
        raise DataError("the dataset is empty: no rows to split")
    fixed = [r for r in records if r.split is not None]
    if fixed:
        if len(fixed) != len(records):
            missing = next(r for r in records if r.split is None)
            raise DataError(f"row {missing.row}: the split column is empty here but set elsewhere; give every row "
                            "train, val or test (or drop the column to draw the split)")
        return fixed_split(records, num_classes=num_classes)
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be in [0, 1) with sum < 1"
        )
    by_patient: dict[str, list[ImageRecord]] = {}
    for record in records:
        by_patient.setdefault(record.patient_id, []).append(record)
    patients = sorted(by_patient)
    n = len(patients)
    n_val, n_test = _count(val_fraction, n), _count(test_fraction, n)
    if n_val + n_test >= n:
        raise DataError(
            f"only {n} patient(s) in the dataset: too few for val_fraction={val_fraction} and "
            f"test_fraction={test_fraction} (each non-zero split needs at least one patient and train "
            f"needs one); add data or set the fractions to 0"
        )
    strata: dict[int, list[str]] = {}
    for pid in patients:
        strata.setdefault(_patient_label(by_patient[pid]), []).append(pid)
    rng = np.random.default_rng(seed)
    keys = sorted(strata)
    for k in keys:
        strata[k] = [strata[k][i] for i in rng.permutation(len(strata[k]))]
    sizes = [len(strata[k]) for k in keys]
    reserve = [max(s - 1, 0) for s in sizes]  # keep one patient per class for train if we can
    test_counts = _apportion(n_test, sizes, caps=reserve, hard_caps=sizes)
    val_counts = _apportion(
        n_val,
        sizes,
        caps=[max(r - t, 0) for r, t in zip(reserve, test_counts)],
        hard_caps=[s - t for s, t in zip(sizes, test_counts)],
    )
    assignment: dict[str, str] = {}
    for k, n_t, n_v in zip(keys, test_counts, val_counts):
        for i, pid in enumerate(strata[k]):
            assignment[pid] = "test" if i < n_t else "val" if i < n_t + n_v else "train"
    splits = {name: tuple(r for r in records if assignment[r.patient_id] == name) for name in ("train", "val", "test")}
    _check_classes(splits["train"], by_patient, num_classes)
    return RecordSplits(**splits)


def fixed_split(records: Sequence[ImageRecord], *, num_classes: int = 2) -> RecordSplits:
    """The split the labels CSV's ``split`` column fixes (every row has one; a patient's rows agree)."""
    first: dict[str, ImageRecord] = {}
    for r in records:
        seen = first.setdefault(r.patient_id, r)
        if seen.split != r.split:
            raise DataError(f"row {r.row}: patient {r.patient_id!r} is in split {r.split!r} here and in "
                            f"{seen.split!r} at row {seen.row}: one patient's rows must share a split")
    splits = {name: tuple(r for r in records if r.split == name) for name in ("train", "val", "test")}
    if not splits["train"]:
        raise DataError("the split column puts no row in train")
    by_patient: dict[str, list[ImageRecord]] = {}
    for r in records:
        by_patient.setdefault(r.patient_id, []).append(r)
    _check_classes(splits["train"], by_patient, num_classes)
    return RecordSplits(**splits)


def _count(fraction: float, n: int) -> int:
    return 0 if fraction <= 0 else max(1, int(round(fraction * n)))


def _patient_label(rows: Sequence[ImageRecord]) -> int:
    counts = Counter(r.label for r in rows)
    return min(counts, key=lambda label: (-counts[label], label))


def _apportion(total: int, sizes: Sequence[int], *, caps: Sequence[int], hard_caps: Sequence[int]) -> list[int]:
    """Share ``total`` over strata in proportion to ``sizes`` (largest remainder), within ``caps``.

    If the soft ``caps`` cannot hold ``total`` (tiny classes), the rest goes up to ``hard_caps``,
    so the requested count is always met when the dataset is big enough.
    """
    whole = sum(sizes)
    quotas = [total * s / whole for s in sizes]
    counts = [min(int(q), c) for q, c in zip(quotas, caps)]
    order = sorted(range(len(sizes)), key=lambda i: (-(quotas[i] - int(quotas[i])), i))
    for limits in (caps, hard_caps):
        while sum(counts) < total:
            room = [i for i in order if counts[i] < limits[i]]
            if not room:
                break
            for i in room:
                if sum(counts) == total:
                    break
                counts[i] += 1
    return counts


def _check_classes(train: Sequence[ImageRecord], by_patient: dict[str, list[ImageRecord]], num_classes: int) -> None:
    present = {r.label for r in train}
    for label in range(num_classes):
        if label not in present:
            holders = sum(1 for rows in by_patient.values() if any(r.label == label for r in rows))
            raise DataError(
                f"class {label} has no images in the train split ({holders} patient(s) in the whole dataset "
                f"have label {label}); add data for it or lower num_classes"
            )
