"""The labels CSV: one row per image file, read into frozen :class:`ImageRecord` values.

Columns (header names are matched case-insensitively, extra columns are ignored):

``path``
    The image, relative to ``root`` or absolute: a ``.nii``/``.nii.gz`` file, a ``.dcm`` file,
    or a folder holding one DICOM series.
``label``
    Integer class in ``0 .. num_classes - 1``.
``patient_id`` (optional)
    Groups rows for the patient-level split. Missing column or empty cell: the row's path is
    used, so every file counts as its own patient.
``site`` (optional)
    Which hospital holds the row; empty means unknown (``None``).
``split`` (optional)
    ``train``, ``val`` or ``test``: a split the data owner fixed (every row then needs one, and
    all rows of a patient the same); without the column the patient-level split is drawn.

Every problem is a :class:`~ppml_hybrid.errors.DataError` naming the CSV file, the row (its line
number in the file, header = row 1, as a spreadsheet shows it) and the offending value, so
that a data owner can fix the file without a debugger. Nothing is skipped silently except
completely blank lines, which are not rows.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from ppml_hybrid.errors import DataError

logger = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("path", "label")
OPTIONAL_COLUMNS = ("patient_id", "site", "split")
SPLIT_NAMES = ("train", "val", "test")


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image file (2D image or 3D volume) from the labels CSV."""

    path: Path
    """Absolute path of the file or DICOM series folder."""
    label: int
    patient_id: str
    site: Optional[str]
    row: int
    """Line number of the row in the labels CSV (header is row 1), for error messages."""
    split: Optional[str] = None
    """The data owner's fixed split (``split`` column), or None."""


def read_labels_csv(path: Path | str, *, root: Path | str | None = None, num_classes: int = 2) -> tuple[ImageRecord, ...]:
    """Read and check a labels CSV; return its rows as records, in file order.

    ``root`` is the folder relative paths are resolved against (default: the CSV's folder).
    Checks everything that can be checked without opening the images: the columns, each
    label, duplicate paths and that each path exists.
    """
    csv_path = Path(path)
    base = Path(root) if root is not None else csv_path.parent
    if num_classes < 1:
        raise DataError(f"num_classes must be at least 1, got {num_classes}")
    header, rows = _read_rows(csv_path)
    columns = _column_index(csv_path, header)
    records: list[ImageRecord] = []
    seen: dict[str, int] = {}
    for line, cells in rows:
        if len(cells) != len(header):
            raise DataError(
                f"{csv_path} row {line}: has {len(cells)} field(s) but the header has {len(header)}"
            )
        record = _parse_row(csv_path, line, cells, columns, base=base, num_classes=num_classes)
        key = os.path.normcase(str(record.path))
        if key in seen:
            raise DataError(
                f"{csv_path} row {line}: path {cells[columns['path']].strip()!r} is a duplicate of row {seen[key]}"
            )
        seen[key] = line
        records.append(record)
    if not records:
        raise DataError(f"{csv_path}: has a header but no rows; the dataset is empty")
    if "patient_id" not in columns:
        logger.info("%s has no patient_id column: each file is treated as its own patient", csv_path)
    return tuple(records)


def _read_rows(csv_path: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """Header and non-blank rows with their line numbers; DataError if unreadable."""
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            header: list[str] | None = None
            rows: list[tuple[int, list[str]]] = []
            for cells in reader:
                if not any(c.strip() for c in cells):
                    continue
                if header is None:
                    header = cells
                else:
                    rows.append((reader.line_num, cells))
    except FileNotFoundError:
        raise DataError(f"labels CSV {csv_path} does not exist") from None
    except IsADirectoryError:
        raise DataError(f"labels CSV {csv_path} is a folder, not a file") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"labels CSV {csv_path} cannot be read: {exc}") from exc
    if header is None:
        raise DataError(f"labels CSV {csv_path} is empty (no header row); expected columns path,label")
    return header, rows


def _column_index(csv_path: Path, header: Sequence[str]) -> dict[str, int]:
    names = [h.strip().lower() for h in header]
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in index and name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            raise DataError(f"{csv_path} row 1: column {name!r} appears twice in the header")
        index.setdefault(name, i)
    missing = [c for c in REQUIRED_COLUMNS if c not in index]
    joined = ",".join(header)
    other = next((sep for sep in (";", "\t", "|") if sep in joined and all(c in joined.lower() for c in missing)), None)
    if missing and other is not None:
        raise DataError(
            f"{csv_path} row 1: the header {joined!r} is separated by {other!r}; the labels CSV must be "
            "comma-separated (path,label[,patient_id][,site]): re-export it with commas"
        )
    if missing:
        raise DataError(
            f"{csv_path} row 1: missing column(s) {', '.join(missing)}; header is {','.join(header)!r} "
            f"(expected path,label[,patient_id][,site])"
        )
    return {k: v for k, v in index.items() if k in REQUIRED_COLUMNS + OPTIONAL_COLUMNS}


def _parse_row(
    csv_path: Path, line: int, cells: list[str], columns: dict[str, int], *, base: Path, num_classes: int
) -> ImageRecord:
    where = f"{csv_path} row {line}"
    raw_path = cells[columns["path"]].strip()
    if not raw_path:
        raise DataError(f"{where}: path is empty")
    label = parse_label(cells[columns["label"]], where=where, num_classes=num_classes)
    full = Path(os.path.abspath(base / raw_path))  # an absolute raw_path stays as it is
    if not full.exists():
        raise DataError(f"{where}: path {raw_path!r} does not exist (looked for {full})")
    root = base.resolve()
    if not full.resolve().is_relative_to(root):
        raise DataError(f"{where}: path {raw_path!r} leads outside data.root ({root}): refused (a labels CSV may "
                        "name only files inside its own data folder, links included)")
    patient = cells[columns["patient_id"]].strip() if "patient_id" in columns else ""
    site = cells[columns["site"]].strip() if "site" in columns else ""
    split = cells[columns["split"]].strip().lower() if "split" in columns else None
    if split is not None and split not in SPLIT_NAMES:
        raise DataError(f"{where}: split {cells[columns['split']].strip()!r} is not one of {', '.join(SPLIT_NAMES)}")
    return ImageRecord(path=full, label=label, patient_id=patient or raw_path, site=site or None, row=line,
                       split=split)


def parse_label(text: str, *, where: str, num_classes: int) -> int:
    """Integer label from a CSV cell. ``"1.0"`` is accepted (spreadsheets write it), ``"0.5"`` is not."""
    value = text.strip()
    if not value:
        raise DataError(f"{where}: label is empty; expected an integer in 0..{num_classes - 1}")
    try:
        label = int(value)
    except ValueError:
        try:
            as_float = float(value)
        except ValueError:
            raise DataError(f"{where}: label {value!r} is not an integer") from None
        if not as_float.is_integer():
            raise DataError(f"{where}: label {value!r} is not an integer") from None
        label = int(as_float)
    if not 0 <= label < num_classes:
        raise DataError(
            f"{where}: label {label} is not a known class; expected 0..{num_classes - 1} (num_classes={num_classes}). "
            f"For more classes set model.num_classes and the last block's out to the same N "
            f"(e.g. model.num_classes=3 model.blocks.4.out=3 for the default model)"
        )
    return label
