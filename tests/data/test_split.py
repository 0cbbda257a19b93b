"""Patient-level split: disjoint, deterministic, stratified, clear errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from ppml_hybrid.data.records import ImageRecord
from ppml_hybrid.data.split import split_records
from ppml_hybrid.errors import DataError


def _records(n_patients: int, per_patient: int = 3, positive_every: int = 2) -> list[ImageRecord]:
    out = []
    for p in range(n_patients):
        for k in range(per_patient):
            out.append(
                ImageRecord(
                    path=Path(f"/data/p{p}_{k}.nii"), label=int(p % positive_every == 0), patient_id=f"p{p}",
                    site=None, row=len(out) + 2,
                )
            )
    return out


def _patients(records):
    return {r.patient_id for r in records}


def test_no_patient_in_two_splits_and_all_used():
    records = _records(40)
    s = split_records(records, val_fraction=0.15, test_fraction=0.15, seed=3)
    train, val, test = _patients(s.train), _patients(s.val), _patients(s.test)
    assert not (train & val or train & test or val & test)
    assert len(train | val | test) == 40
    assert len(s.train) + len(s.val) + len(s.test) == len(records)
    assert len(test) == 6 and len(val) == 6
    assert Counter(r.label for r in s.test)[1] == 9  # stratified: 3 of 6 test patients positive


def test_deterministic_and_order_independent():
    records = _records(30)
    a = split_records(records, val_fraction=0.2, test_fraction=0.2, seed=7)
    b = split_records(list(reversed(records)), val_fraction=0.2, test_fraction=0.2, seed=7)
    c = split_records(records, val_fraction=0.2, test_fraction=0.2, seed=8)
    assert _patients(a.test) == _patients(b.test) and _patients(a.val) == _patients(b.val)
    assert _patients(a.test) != _patients(c.test)


def test_too_few_patients_says_how_many():
    with pytest.raises(DataError, match=r"only 2 patient\(s\)"):
        split_records(_records(2), val_fraction=0.15, test_fraction=0.15, seed=0)


def test_zero_fractions_allowed():
    s = split_records(_records(3), val_fraction=0.0, test_fraction=0.0, seed=0)
    assert len(s.val) == 0 and len(s.test) == 0 and len(s.train) == 9


def test_class_missing_from_train():
    records = [r for r in _records(10) if r.label == 0]
    with pytest.raises(DataError, match=r"class 1 has no images in the train split \(0 patient"):
        split_records(records, val_fraction=0.2, test_fraction=0.2, seed=0)


def test_single_patient_of_a_class_stays_in_train():
    records = _records(20, positive_every=100)  # only p0 is positive
    s = split_records(records, val_fraction=0.2, test_fraction=0.2, seed=1)
    assert "p0" in _patients(s.train)


def test_empty():
    with pytest.raises(DataError, match="empty"):
        split_records([], val_fraction=0.1, test_fraction=0.1, seed=0)
