"""Reading, validating and writing input images (NIfTI-1/2 or Analyze).

Every problem is reported as one :class:`ImageError` whose message is
``"<file>: <problem>"``, never as a raw traceback from the reader.
"""

from __future__ import annotations

import gzip
import logging
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.affines import voxel_sizes

LOGGER = logging.getLogger(__name__)

#: Smallest and largest voxel size accepted, in mm.
MIN_VOXEL_MM = 0.05
MAX_VOXEL_MM = 20.0

#: Most distinct non-zero values an integer label image may have to count as a mask.
MAX_MASK_LABELS = 255

#: World-space difference (mm) above which qform and sform are said to disagree.
_FORM_TOLERANCE_MM = 1e-3


class ImageError(ValueError):
    """An input image (or mask) is unreadable or unfit for processing."""


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _diagnose(path: Path, exc: BaseException) -> str:
    """Why ``nib.load`` failed: an empty file, a cut gzip stream, or another format."""
    if path.stat().st_size == 0:
        return "the file is empty, 0 bytes"
    with open(path, "rb") as handle:
        is_gzip = handle.read(2) == b"\x1f\x8b"
    if is_gzip:
        try:
            with gzip.open(path, "rb") as stream:
                while stream.read(1 << 24):
                    pass
        except (OSError, EOFError, zlib.error) as gz_exc:
            return f"the file is truncated or corrupt: {_reason(gz_exc)}"
    return _reason(exc)


def read_image(path) -> nib.Nifti1Image:
    """Read an image into memory as a 3-D :class:`~nibabel.Nifti1Image`.

    Checks only what reading needs: the file is a complete NIfTI/Analyze image,
    it is 3-D (trailing axes of length 1 are squeezed, so a 4-D file with one
    volume is accepted) and its affine is usable. The data keep their stored
    type (scaled data come back as floats). Use :func:`load_image` for inputs.

    Raises
    ------
    ImageError
        On a missing, truncated or non-image file, a 2-D image, several volumes
        or a singular affine.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: file not found")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # noqa: BLE001 - nibabel raises many types for foreign files
        raise ImageError(f"{path}: not a readable NIfTI/Analyze image ({_diagnose(path, exc)})"
                         ) from None
    if not isinstance(img, nib.analyze.AnalyzeImage):
        raise ImageError(f"{path}: not a NIfTI/Analyze image ({type(img).__name__}); "
                         "convert it to NIfTI first")
    shape = img.shape
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    if len(shape) > 3:
        raise ImageError(f"{path}: has {int(np.prod(shape[3:]))} volumes (shape {img.shape}); "
                         "a single 3-D volume is needed")
    if len(shape) < 3 or min(shape) < 2:
        raise ImageError(f"{path}: is 2-D (shape {img.shape}); a 3-D volume is needed")
    try:
        data = np.asanyarray(img.dataobj[(Ellipsis,) + (0,) * (len(img.shape) - 3)])
    except (OSError, EOFError, ValueError, zlib.error, MemoryError) as exc:
        raise ImageError(f"{path}: image data cannot be read: the file is truncated or corrupt "
                         f"({_reason(exc)})") from None
    affine = img.affine
    if (affine is None or not np.all(np.isfinite(affine))
            or abs(np.linalg.det(affine[:3, :3])) < 1e-12):
        raise ImageError(f"{path}: the affine (voxel-to-world matrix) is missing or singular")
    header = img.header
    if not isinstance(header, nib.Nifti1Header):
        header = nib.Nifti1Header.from_header(header)
    out = nib.Nifti1Image(data, affine, header.copy())
    out.update_header()  # writes the affine into q/s-forms when they did not hold it
    _warn_forms(out, path)
    return out


def _warn_forms(img: nib.Nifti1Image, path: Path) -> None:
    hdr = img.header
    qcode, scode = int(hdr["qform_code"]), int(hdr["sform_code"])
    if qcode == 0 and scode == 0:
        LOGGER.warning("%s: neither qform nor sform is set; orientation is a guess", path)
    elif qcode and scode:
        corners = np.array(np.meshgrid(*[(0, n - 1) for n in img.shape], indexing="ij"))
        corners = corners.reshape(3, -1)
        diff = nib.affines.apply_affine(hdr.get_qform(), corners.T) - nib.affines.apply_affine(
            hdr.get_sform(), corners.T)
        if np.abs(diff).max() > _FORM_TOLERANCE_MM:
            LOGGER.warning("%s: qform and sform disagree by up to %.3g mm; the sform is used",
                           path, np.abs(diff).max())


def load_image(path) -> nib.Nifti1Image:
    """Read and validate an input image.

    The image must be a readable NIfTI/Analyze file holding one 3-D volume
    (a 4-D file with one volume is squeezed), with finite values, at least one
    non-zero voxel and voxel sizes within ``[MIN_VOXEL_MM, MAX_VOXEL_MM]`` mm.

    Parameters
    ----------
    path : path-like
        Image file.

    Returns
    -------
    nibabel.Nifti1Image
        The image, data in memory with their stored type, header kept.

    Raises
    ------
    ImageError
        ``"<file>: <problem>"`` for the first problem found.
    """
    img = read_image(path)
    data = np.asanyarray(img.dataobj)
    if data.dtype.kind not in "biuf":
        raise ImageError(f"{path}: unsupported data type {data.dtype}")
    if data.dtype.kind == "f":
        bad = np.size(data) - np.count_nonzero(np.isfinite(data))
        if bad:
            raise ImageError(f"{path}: {bad} voxel(s) are NaN or infinite")
    if not np.any(data):
        raise ImageError(f"{path}: image is empty (all voxels are zero)")
    sizes = voxel_sizes(img.affine)
    if np.any(sizes < MIN_VOXEL_MM) or np.any(sizes > MAX_VOXEL_MM):
        raise ImageError(f"{path}: voxel sizes {np.round(sizes, 4).tolist()} mm are outside "
                         f"{MIN_VOXEL_MM}-{MAX_VOXEL_MM} mm (wrong units in the header?)")
    LOGGER.debug("%s: valid, shape %s, voxel sizes %s mm, axes %s", path, img.shape,
                 np.round(sizes, 3).tolist(), "".join(nib.aff2axcodes(img.affine)))
    return img


#: Smallest field of view (mm) on every axis: 40 voxels of the 0.8 mm network grid.
MIN_EXTENT_MM = 32.0
#: Robust intensity range (1st-99th percentile of the non-zero voxels) below this fraction
#: of their largest magnitude marks a constant or near-constant image.
MIN_RELATIVE_RANGE = 0.01


def check_enhanceable(img, path, voxel_mm: float = 0.8) -> None:
    """Raise :class:`ImageError` when a valid image cannot hold a brain worth enhancing.

    Refused: no positive voxel; constant or near-constant intensities (the robust range of
    the non-zero voxels, 1st to 99th percentile, under :data:`MIN_RELATIVE_RANGE` of their
    largest magnitude); a field of view under :data:`MIN_EXTENT_MM` on any axis (fewer than
    40 voxels of the 0.8 mm network grid; fetal brains are larger).
    """
    data = np.asanyarray(img.dataobj)
    if not np.any(data > 0):
        raise ImageError(f"{path}: no positive voxel (all intensities are zero or negative)")
    extent = np.asarray(img.shape[:3]) * voxel_sizes(img.affine)
    if np.any(extent < MIN_EXTENT_MM):
        grid = np.floor(extent / voxel_mm).astype(int).tolist()
        raise ImageError(f"{path}: field of view {np.round(extent, 1).tolist()} mm ({grid} voxels of "
                         f"{voxel_mm} mm) is too small to hold a brain (at least {MIN_EXTENT_MM:g} mm "
                         "on every axis)")
    values = data[data != 0].astype(np.float64)
    low, high = np.percentile(values, [1, 99])
    if high - low < MIN_RELATIVE_RANGE * float(np.abs(values).max()):
        raise ImageError(f"{path}: intensities are constant or nearly so (1st-99th percentile "
                         f"{low:g}-{high:g} of the non-zero voxels); not an MRI image")


def load_enhanceable(path, voxel_mm: float = 0.8) -> nib.Nifti1Image:
    """:func:`load_image` plus :func:`check_enhanceable`: what an input must pass before any work."""
    img = load_image(path)
    check_enhanceable(img, path, voxel_mm)
    return img


def binarize_mask(data: np.ndarray, path="mask") -> np.ndarray:
    """Turn a binary, probabilistic or integer-label mask array into a boolean array.

    Values in ``[0, 1]`` are thresholded at 0.5; integer labels (at most
    ``MAX_MASK_LABELS`` distinct non-zero values) count as brain where non-zero.

    Raises
    ------
    ImageError
        When values are negative or not finite, or look like image intensities.
    """
    data = np.asanyarray(data)
    if data.dtype.kind == "b":
        return data.astype(bool)
    if data.dtype.kind == "f" and not np.all(np.isfinite(data)):
        raise ImageError(f"{path}: mask has NaN or infinite values")
    if data.min() < 0:
        raise ImageError(f"{path}: mask has negative values; expected 0/1 or a label image")
    top = data.max()
    if top <= 1:
        return data >= 0.5
    if data.dtype.kind == "f" and not np.array_equal(data, np.round(data)):
        raise ImageError(f"{path}: mask has non-integer values above 1; it looks like an image, "
                         "not a mask")
    labels = np.flatnonzero(np.bincount(data.astype(np.int64).ravel())) if top < 2**24 else None
    if labels is None or labels.size - (labels[0] == 0) > MAX_MASK_LABELS:
        raise ImageError(f"{path}: mask has too many distinct values; it looks like an image, "
                         "not a mask")
    return data > 0


def validate_mask(path, reference) -> nib.Nifti1Image:
    """Read a precomputed brain mask and put it on the reference image's grid.

    The mask may be on any grid: it is binarized (:func:`binarize_mask`) and
    resampled by nearest neighbour in world coordinates.

    Parameters
    ----------
    path : path-like
        Mask file.
    reference : nibabel image or path-like
        Image whose grid the mask is returned on.

    Returns
    -------
    nibabel.Nifti1Image
        uint8 mask (0/1) on the reference grid.

    Raises
    ------
    ImageError
        When the mask is unreadable, not mask-like, empty, or does not overlap
        the reference in world space.
    """
    from .resample import resample_to_reference

    if not isinstance(reference, nib.spatialimages.SpatialImage):
        reference = read_image(reference)
    img = read_image(path)
    mask = binarize_mask(np.asanyarray(img.dataobj), path)
    if not mask.any():
        raise ImageError(f"{path}: mask is empty (no voxel is inside)")
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), img.affine, img.header)
    mask_img.header.set_data_dtype(np.uint8)
    out = resample_to_reference(mask_img, reference, order=0)
    if not np.any(out.dataobj):
        raise ImageError(f"{path}: mask does not overlap the image in world space "
                         "(wrong subject, wrong header or another space?)")
    if mask_img.shape != reference.shape or not np.allclose(mask_img.affine, reference.affine,
                                                             atol=1e-4):
        LOGGER.info("%s: mask resampled onto the image grid %s", path, reference.shape)
    return out


def save_image(img: nib.spatialimages.SpatialImage, path) -> Path:
    """Write ``img`` to ``path`` atomically: no partial file is left on failure.

    Single-file formats (``.nii``, ``.nii.gz``) go through a temporary name in
    the same folder and are renamed when complete; other formats are written
    directly.
    """
    path = Path(path)
    suffix = ".nii.gz" if path.name.endswith(".nii.gz") else path.suffix
    if suffix not in (".nii", ".nii.gz"):
        img.to_filename(str(path))
        return path
    tmp = path.with_name(f".{path.name[: -len(suffix)]}.part{os.getpid()}{suffix}")
    try:
        img.to_filename(str(tmp))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
