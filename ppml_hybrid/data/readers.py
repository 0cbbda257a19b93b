"""Read one image file (NIfTI, DICOM file or DICOM series folder) into a checked float32 array.

The result is always 2D ``[X, Y]`` or 3D ``[X, Y, Z]`` in NIfTI/MONAI axis order (DICOM pixel
arrays, which are ``[rows, columns]``, are transposed to match), finite and non-empty. Every
failure is a :class:`~ppml_hybrid.errors.DataError` naming the file; messages state shapes and
counts but never voxel values (DESIGN.md section 3).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ppml_hybrid.errors import DataError

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIX = ".dcm"


def read_image(path: Path | str) -> np.ndarray:
    """Read ``path`` by its kind and return a checked 2D or 3D float32 array.

    DICOM is recognised by its content (the ``DICM`` marker after the 128-byte preamble) as well
    as by a ``.dcm`` name: PACS exports are often ``IM0001`` or bare numbers."""
    path = Path(path)
    if path.is_dir():
        data = read_dicom_series(path)
    elif _is_nifti(path):
        data = read_nifti(path)
    elif path.suffix.lower() == DICOM_SUFFIX or is_dicom_file(path):
        data = read_dicom_file(path)
    elif not path.exists():
        raise DataError(f"{path}: file does not exist")
    else:
        raise DataError(
            f"{path}: unsupported file type; expected .nii, .nii.gz, a DICOM file (.dcm, or any name with the "
            "DICM marker) or a folder holding one DICOM series"
        )
    return check_image(data, source=path)


DICOM_MAGIC_OFFSET = 128


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a file with the DICOM Part 10 marker (``DICM`` after the preamble)."""
    try:
        with open(path, "rb") as f:
            head = f.read(DICOM_MAGIC_OFFSET + 4)
    except OSError:
        return False
    return len(head) == DICOM_MAGIC_OFFSET + 4 and head[DICOM_MAGIC_OFFSET:] == b"DICM"


def check_image(data: np.ndarray, *, source: Path | str) -> np.ndarray:
    """Squeeze singleton axes and reject empty, >3D, non-finite or complex data.

    Accepted: 2D; 3D; 3D/4D whose extra axes have size 1 (``[X, Y, Z, 1]`` from 4D writers,
    ``[X, Y, 1]`` single slices). A true 4D series (several volumes) is rejected rather than
    silently reduced to its first volume: which volume is wanted is the data owner's call.
    """
    if np.iscomplexobj(data):
        raise DataError(f"{source}: complex-valued image data (dtype {data.dtype}) is not supported")
    shape = tuple(int(s) for s in data.shape)
    if data.size == 0:
        raise DataError(f"{source}: image is empty (shape {shape})")
    squeezed = data
    while squeezed.ndim > 3 and squeezed.shape[-1] == 1:
        squeezed = squeezed[..., 0]
    if squeezed.ndim == 3 and 1 in squeezed.shape:
        squeezed = squeezed.reshape([s for s in squeezed.shape if s != 1] or [1])
    if squeezed.ndim > 3:
        extra = int(np.prod(squeezed.shape[3:]))
        raise DataError(
            f"{source}: image has shape {shape}: {squeezed.ndim}D data with {extra} volumes beyond the "
            f"first three axes; expected a 2D image or a 3D volume (extra axes must have size 1)"
        )
    if squeezed.ndim < 2 or min(squeezed.shape[:2]) < 2:
        raise DataError(
            f"{source}: image has shape {shape}; expected a 2D image or a 3D volume with at least 2 pixels "
            f"along each in-plane axis"
        )
    out = np.asarray(squeezed, dtype=np.float32)
    bad = int(np.count_nonzero(~np.isfinite(out)))
    if bad:
        raise DataError(
            f"{source}: {bad} of {out.size} voxels are NaN or Inf; fix or mask them before training"
        )
    if out.size > 1 and float(out.max()) == float(out.min()):
        raise DataError(
            f"{source}: every voxel has the same value ({float(out.min()):g}): an empty or failed export, "
            "nothing to learn from; fix the file or drop its row"
        )
    return out


def read_nifti(path: Path) -> np.ndarray:
    """NIfTI-1/2 (``.nii``, ``.nii.gz``) via nibabel, scaling (scl_slope/inter) applied, in RAS
    orientation: voxel axes reordered and flipped to the closest of right, anterior, superior
    (``nibabel.as_closest_canonical``), so that scans stored LAS, RAS or LPS are not mirrored
    against each other (the slicing axis then means the same anatomy in every file)."""
    import nibabel as nib

    try:
        img = nib.as_closest_canonical(nib.load(str(path)))
        return np.asarray(img.get_fdata(dtype=np.float32, caching="unchanged"))
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist") from None
    except MemoryError:
        raise
    except Exception as exc:  # nibabel raises many types for corrupt/truncated files
        raise DataError(f"{path}: cannot read NIfTI file ({type(exc).__name__}: {_short(exc)})") from exc


def read_dicom_file(path: Path) -> np.ndarray:
    """One DICOM file: a 2D image, or a 3D volume for multi-frame files (frames on the last axis),
    reoriented to RAS like NIfTI (:func:`to_ras`) when the file states its orientation."""
    ds = _dcmread(path)
    pixels = _modality_pixels(ds, path)
    if pixels.ndim == 3:  # multi-frame: [frames, rows, cols] -> [cols, rows, frames]
        return to_ras(np.transpose(pixels, (2, 1, 0)), ds.get("ImageOrientationPatient"))
    return to_ras(pixels.T, ds.get("ImageOrientationPatient"))


def to_ras(volume: np.ndarray, orientation) -> np.ndarray:
    """``volume`` ([columns, rows(, slices)], slices ordered along the slice normal) with its axes
    reordered and flipped to the closest of right, anterior, superior, as NIfTI is read
    (``nibabel.as_closest_canonical``): a DICOM series stored head-first and one stored feet-first,
    or with mirrored rows, give the same array, and the same anatomy as a NIfTI of the scan.

    DICOM's patient axes are L, P, S: the column index runs along ImageOrientationPatient's row
    direction, the row index along its column direction, the slice index along their cross
    product. Without ImageOrientationPatient (secondary captures) the array is returned as stored."""
    from nibabel.orientations import apply_orientation, io_orientation

    if orientation is None or len(orientation) != 6:
        return volume
    row, col = np.asarray(orientation[:3], dtype=np.float64), np.asarray(orientation[3:], dtype=np.float64)
    normal = np.cross(row, col)
    axes = np.stack([row, col, normal], axis=1) * np.array([[-1.0], [-1.0], [1.0]])  # LPS -> RAS
    affine = np.eye(4)
    affine[:3, :3] = axes
    ornt = io_orientation(affine)
    if volume.ndim == 3:
        return apply_orientation(volume, ornt)
    # a single image: flip each in-plane axis to its positive direction, and put the one closer
    # to an earlier RAS axis first (a sagittal slice keeps its two axes, A then S)
    image = volume
    for axis in (0, 1):
        if ornt[axis, 1] < 0:
            image = np.flip(image, axis=axis)
    return np.ascontiguousarray(image.T if ornt[0, 0] > ornt[1, 0] else image)


def read_dicom_series(folder: Path) -> np.ndarray:
    """A folder holding one series of single-frame DICOM files -> ``[cols, rows, slices]``.

    Files count as DICOM by a ``.dcm`` name or by their content (``IM0001``, bare numbers);
    ``DICOMDIR`` index files and hidden files are not slices.

    Slices are ordered by position along the slice normal (ImagePositionPatient projected on
    the cross product of ImageOrientationPatient), else by InstanceNumber, else by file name,
    because file names rarely follow anatomy. Rescale slope/intercept is applied per slice. The
    volume is then reoriented to RAS (:func:`to_ras`).
    """
    candidates = sorted(p for p in folder.iterdir()
                        if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR")
    files = [p for p in candidates if p.suffix.lower() == DICOM_SUFFIX or is_dicom_file(p)]
    if not files:
        raise DataError(f"{folder}: folder holds no DICOM files (by .dcm name or DICM marker); expected one "
                        "DICOM series")
    others = [p.name for p in candidates if p not in files]
    if others:
        logger.warning("%s: %d file(s) that are not DICOM ignored (%s)", folder, len(others), ", ".join(others[:3]))
    datasets = [(f, _dcmread(f)) for f in files]
    series = {str(ds.get("SeriesInstanceUID", "")) for _, ds in datasets}
    if len(series) > 1:
        raise DataError(
            f"{folder}: folder holds {len(series)} DICOM series (different SeriesInstanceUID); "
            f"put each series in its own folder and list each as its own row"
        )
    slices = []
    for f, ds in datasets:
        pixels = _modality_pixels(ds, f)
        if pixels.ndim != 2:
            raise DataError(
                f"{f}: multi-frame DICOM (shape {pixels.shape}) inside a series folder; "
                f"list the file as its own row instead"
            )
        slices.append(pixels)
    shapes = {s.shape for s in slices}
    if len(shapes) > 1:
        raise DataError(f"{folder}: slices have different sizes {sorted(shapes)}; expected one series")
    order = _slice_order(folder, [f for f, _ in datasets], [ds for _, ds in datasets])
    volume = np.stack([slices[i] for i in order], axis=0)  # [slices, rows, cols]
    orientations = {tuple(round(float(v), 4) for v in ds.get("ImageOrientationPatient") or ()) for _, ds in datasets}
    if len(orientations) > 1:  # e.g. a localiser whose slices turn: no volume, each slice on its own
        logger.warning("%s: slices have %d different ImageOrientationPatient: not one volume; each slice is "
                       "reoriented in its own plane (slice along data.slice_axis=2 for these images)", folder,
                       len(orientations))
        ordered = [datasets[i][1] for i in order]
        return np.stack([to_ras(s.T, ds.get("ImageOrientationPatient")) for s, ds in zip(volume, ordered)], axis=2)
    return to_ras(np.transpose(volume, (2, 1, 0)), datasets[0][1].get("ImageOrientationPatient"))


def _slice_order(folder: Path, files: list[Path], datasets: list) -> list[int]:
    positions = [ds.get("ImagePositionPatient") for ds in datasets]
    orientations = [ds.get("ImageOrientationPatient") for ds in datasets]
    if all(p is not None and len(p) == 3 for p in positions) and all(
        o is not None and len(o) == 6 for o in orientations
    ):
        orient = np.asarray(orientations[0], dtype=np.float64)
        normal = np.cross(orient[:3], orient[3:])
        keys = [float(np.dot(np.asarray(p, dtype=np.float64), normal)) for p in positions]
        kind = "ImagePositionPatient"
    elif all(ds.get("InstanceNumber") is not None for ds in datasets):
        keys = [float(ds.InstanceNumber) for ds in datasets]
        kind = "InstanceNumber"
    else:
        logger.warning("%s: no slice positions or instance numbers; ordering slices by file name", folder)
        return list(range(len(files)))
    order = sorted(range(len(files)), key=lambda i: (keys[i], files[i].name))
    for a, b in zip(order, order[1:]):
        if abs(keys[a] - keys[b]) < 1e-6:
            raise DataError(
                f"{folder}: {files[a].name} and {files[b].name} have the same {kind}; "
                f"the folder seems to hold more than one acquisition"
            )
    return order


def _dcmread(path: Path):
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path))
    except FileNotFoundError:
        raise DataError(f"{path}: file does not exist") from None
    except InvalidDicomError as exc:
        raise DataError(f"{path}: not a DICOM file ({_short(exc)})") from exc
    except MemoryError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read DICOM file ({type(exc).__name__}: {_short(exc)})") from exc


def _modality_pixels(ds, path: Path) -> np.ndarray:
    """Pixel data with the modality LUT / rescale slope and intercept applied, as float32."""
    from pydicom.pixels import apply_modality_lut

    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM file has no pixel data")
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if samples != 1:
        raise DataError(f"{path}: colour DICOM (SamplesPerPixel={samples}) is not supported; expected greyscale")
    try:
        pixels = ds.pixel_array
        pixels = apply_modality_lut(pixels, ds)
    except MemoryError:
        raise
    except Exception as exc:
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", None) or str(syntax or "unknown")
        # every line of pydicom's message: the decoder's own reason (or the packages that would
        # decode it) comes after the first
        detail = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise DataError(
            f"{path}: cannot decode DICOM pixel data (transfer syntax {name}; {type(exc).__name__}: "
            f"{detail[:600]}). The lock ships decoders for JPEG, JPEG-LS, JPEG 2000 and RLE "
            "(pylibjpeg); a stream they refuse is not standard-conforming: re-export it uncompressed"
        ) from exc
    return np.asarray(pixels, dtype=np.float32)


def _is_nifti(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in NIFTI_SUFFIXES)


def _short(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
