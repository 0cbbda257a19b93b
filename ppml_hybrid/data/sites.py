"""One folder per site: what each hospital's party reads on a one-machine run.

In a consortium every hospital already has its own folder. On one machine the launcher
(``ppml_hybrid.roles.local``) gives each party process a folder of its own, so that each
reads only its own site's files, exactly as across hosts:

* the demo set is divided once, in its cache: ``<demo>/sites-{n}/site-J/`` with its own
  ``labels.csv`` and hard links (or copies) of its subjects' files (:func:`demo_site_folders`);
* a user's labelled folder (``data=nifti``) is divided by labels file: ``site-J.csv`` lists
  only site J's rows, paths relative to ``data.root`` (:func:`site_label_files`);
* in-memory sets (tests, benchmarks) are written as one NIfTI file per row with a ``split``
  column (:func:`write_site_sets`).

Rows go to sites by the CSV's ``site`` column when every row has one (one site per party),
otherwise by a stable hash of the patient id, so one patient's rows stay at one site.
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ppml_hybrid.config import DataConfig
from ppml_hybrid.data.dataset import locate
from ppml_hybrid.data.demo import LABELS_FILE, ensure_demo
from ppml_hybrid.data.records import ImageRecord, read_labels_csv
from ppml_hybrid.errors import ConfigError

SITES_MARKER = "sites.done"


def owners(sites: Sequence[Optional[str]], patient_ids: Sequence[str], *, parties: int) -> List[int]:
    """Which site (party) holds each row (module doc)."""
    if sites and all(s is not None for s in sites):
        names = sorted(set(sites))
        if len(names) != parties:
            raise ConfigError(
                f"the labels CSV names {len(names)} sites ({', '.join(names)}) but smpc.parties={parties}: "
                "each site is one party; set smpc.parties or drop the site column"
            )
        return [names.index(s) for s in sites]
    return [int.from_bytes(hashlib.sha256(p.encode()).digest()[:4], "big") % parties for p in patient_ids]


def _write_csv(path: Path, rows: Sequence[Sequence[str]], header: Sequence[str]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def demo_site_folders(cfg: DataConfig, *, parties: int, cache_dir: Optional[Path] = None) -> List[Path]:
    """The demo set divided into one folder per site (made once, atomically, in the demo cache)."""
    root = ensure_demo(cfg, cache_dir=cache_dir)
    target = root / f"sites-{parties}"
    if (target / SITES_MARKER).is_file():
        return [target / f"site-{j}" for j in range(parties)]
    records = read_labels_csv(root / LABELS_FILE, root=root)
    site = owners([r.site for r in records], [r.patient_id for r in records], parties=parties)
    tmp = Path(tempfile.mkdtemp(prefix=f".sites-{parties}-", dir=root))
    try:
        for j in range(parties):
            folder = tmp / f"site-{j}"
            folder.mkdir()
            rows = []
            for r, s in zip(records, site):
                if s != j:
                    continue
                rel = r.path.relative_to(root)
                _link_or_copy(r.path, folder / rel)
                rows.append((rel.as_posix(), str(r.label), r.patient_id))
            _write_csv(folder / LABELS_FILE, rows, ("path", "label", "patient_id"))
        (tmp / SITES_MARKER).write_text("complete\n")
        try:
            tmp.rename(target)
        except OSError:  # another run finished first: use its folders
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [target / f"site-{j}" for j in range(parties)]


def site_label_files(cfg: DataConfig, *, parties: int, out_dir: Path) -> List[Tuple[Path, Path]]:
    """(data.root, site J's labels CSV) per site for a user's labelled folder (module doc)."""
    root, labels = locate(cfg)
    records: Sequence[ImageRecord] = read_labels_csv(labels, root=root)
    site = owners([r.site for r in records], [r.patient_id for r in records], parties=parties)
    base = root.resolve()
    out = []
    for j in range(parties):
        rows = [(r.path.resolve().relative_to(base).as_posix(), str(r.label), r.patient_id, r.split or "")
                for r, s in zip(records, site) if s == j]
        path = out_dir / f"site-{j}.csv"
        header = ("path", "label", "patient_id", "split")
        if not any(row[3] for row in rows):
            rows, header = [row[:3] for row in rows], header[:3]
        _write_csv(path, rows, header)
        out.append((root, path))
    return out


def write_site_sets(splits: object, *, parties: int, out_dir: Path) -> List[Path]:
    """In-memory train/val/test sets as one folder per site, one NIfTI file per row and a
    ``split`` column (tests and benchmarks hand the launcher arrays)."""
    import nibabel as nib
    import numpy as np

    folders = [out_dir / f"site-{j}" for j in range(parties)]
    rows: List[List[Tuple[str, str, str, str]]] = [[] for _ in range(parties)]
    for split in ("train", "val", "test"):
        data = getattr(splits, split)
        site = owners(list(data.sites), list(data.patient_ids), parties=parties)
        for i in range(len(data)):
            j = site[i]
            rel = f"{split}/r{i:05d}.nii.gz"
            (folders[j] / split).mkdir(parents=True, exist_ok=True)
            volume = data.images[i, 0].numpy().astype(np.float32)[:, :, None]
            nib.save(nib.Nifti1Image(volume, np.eye(4)), str(folders[j] / rel))
            rows[j].append((rel, str(int(data.labels[i])), data.patient_ids[i], split))
    for j, folder in enumerate(folders):
        folder.mkdir(parents=True, exist_ok=True)
        _write_csv(folder / LABELS_FILE, rows[j], ("path", "label", "patient_id", "split"))
    return folders
