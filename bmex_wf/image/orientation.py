"""Exact canonical (LPS) reorientation, its inverse, and the network's axis order.

The network sees arrays in "network order": the image is reoriented, by an
exact permutation/flip of voxel axes (no interpolation, world geometry and any
obliquity kept), so that its voxel axes point closest to L, P and S; then
``net = data_lps.transpose(2, 0, 1)``. For an input whose axes are closest to
RAS this is exactly the release's recipe (flip the SimpleITK array along y and
x, then swap array axes 1 and 2), and any orientation of the same head gives
the same network input. :func:`restore_axis_order` gives any grid of the LPS frame (the
network's) the input's axis order back.
"""

from __future__ import annotations

import nibabel as nib
import numpy as np
from nibabel.orientations import (
    axcodes2ornt,
    inv_ornt_aff,
    io_orientation,
    ornt_transform,
)

from .header import header_image, storable

#: Axis codes of the canonical frame.
LPS = ("L", "P", "S")


def axcodes(img: nib.spatialimages.SpatialImage) -> str:
    """Closest world directions of the voxel axes, e.g. ``"RAS"``."""
    return "".join(nib.aff2axcodes(img.affine))


def _to_lps(affine: np.ndarray) -> np.ndarray:
    """Orientation transform taking arrays on ``affine`` to the LPS-closest order."""
    return ornt_transform(io_orientation(affine), axcodes2ornt(LPS))


def reorient_to_lps(img: nib.spatialimages.SpatialImage) -> nib.Nifti1Image:
    """Reorient an image so that its voxel axes are the closest to L, P, S.

    Only voxel axes are permuted and flipped: every voxel keeps its value and
    its world position, and an oblique direction stays oblique. The qform and
    sform are moved with the voxels and keep their codes.

    Parameters
    ----------
    img : nibabel image
        3-D image.

    Returns
    -------
    nibabel.Nifti1Image
        The reoriented image (``img`` itself, as NIfTI-1, if already LPS).
    """
    img = img if isinstance(img, nib.Nifti1Image) else nib.Nifti1Image(
        np.asanyarray(img.dataobj), img.affine, nib.Nifti1Header.from_header(img.header))
    ornt = _to_lps(img.affine)
    out = img.as_reoriented(ornt)
    if out is img:
        return img
    data, hdr = np.asanyarray(out.dataobj), out.header
    qcode, scode = int(img.header["qform_code"]), int(img.header["sform_code"])
    if qcode and scode and np.allclose(img.header.get_best_affine(), img.affine, atol=1e-4):
        voxel_map = inv_ornt_aff(ornt, img.shape)  # move both forms, even where they differ
        hdr.set_qform(img.header.get_qform() @ voxel_map, code=qcode)
        hdr.set_sform(img.header.get_sform() @ voxel_map, code=scode)
        return nib.Nifti1Image(data, hdr.get_best_affine(), hdr)
    return header_image(data, out.affine, hdr)


def restore_orientation(img: nib.spatialimages.SpatialImage,
                        original: nib.spatialimages.SpatialImage,
                        dtype: np.dtype | str | None = None) -> nib.Nifti1Image:
    """Put an image of the LPS frame back on the original image's array order.

    The inverse of :func:`reorient_to_lps`: the result has the original's
    shape, its exact affine, and a copy of its header (qform, sform and their
    codes, pixdim, units); only the data type, scaling and display range are
    set from the new data.

    Parameters
    ----------
    img : nibabel image
        Image on the grid of ``reorient_to_lps(original)``.
    original : nibabel image
        The image before reorientation.
    dtype : numpy dtype, optional
        Data type to store; default: the data's own (float64 stored as float32,
        bool as uint8).

    Raises
    ------
    ValueError
        When ``img`` is not on the reoriented grid of ``original``.
    """
    ornt = _to_lps(original.affine)
    back = ornt_transform(axcodes2ornt(LPS), io_orientation(original.affine))
    expected = original.affine @ inv_ornt_aff(ornt, original.shape[:3])
    lps_shape = [0, 0, 0]
    for axis, (new_axis, _) in enumerate(ornt.astype(int)):
        lps_shape[new_axis] = original.shape[axis]
    lps_shape = tuple(lps_shape)
    if img.shape[:3] != lps_shape or not np.allclose(img.affine, expected, atol=1e-3):
        raise ValueError(
            f"image of shape {img.shape} is not on the LPS grid of the original image "
            f"(expected shape {lps_shape}); resample it onto that grid first")
    data = nib.orientations.apply_orientation(np.asanyarray(img.dataobj), back)
    data, stored = storable(data if dtype is None else data.astype(dtype, copy=False))
    hdr = original.header.copy() if isinstance(original.header, nib.Nifti1Header) else \
        nib.Nifti1Header.from_header(original.header)
    hdr.set_data_dtype(stored)
    hdr.set_slope_inter(None, None)
    hdr["cal_min"] = hdr["cal_max"] = 0
    out = nib.Nifti1Image(data, original.affine, hdr)
    out.update_header()
    return out


def restore_axis_order(img: nib.spatialimages.SpatialImage,
                       original: nib.spatialimages.SpatialImage,
                       dtype: np.dtype | str | None = None) -> nib.Nifti1Image:
    """Put an image on any grid of the LPS frame into the original image's axis order.

    The grid keeps its voxels (no interpolation): its axes are permuted and flipped, and
    its affine moved with them, so that they point as the original's do (same direction
    cosines); e.g. the network grid of an input comes back in the input's orientation at
    the network's voxel size. Header fields (units, q/s-form codes) come from the original.

    Parameters
    ----------
    img : nibabel image
        3-D image whose axes have the directions of ``reorient_to_lps(original)``.
    original : nibabel image
        The image before reorientation.
    dtype : numpy dtype, optional
        Data type to store (default: the data's own).

    Raises
    ------
    ValueError
        When the axes of ``img`` do not have the directions of the reoriented original.
    """
    ornt = _to_lps(original.affine)
    lps_directions = (original.affine @ inv_ornt_aff(ornt, original.shape[:3]))[:3, :3]
    directions = np.asarray(img.affine, dtype=float)[:3, :3]
    if not np.allclose(directions / np.linalg.norm(directions, axis=0),
                       lps_directions / np.linalg.norm(lps_directions, axis=0), atol=1e-4):
        raise ValueError("image axes do not have the directions of the original's LPS "
                         "reorientation")
    back = ornt_transform(axcodes2ornt(LPS), io_orientation(original.affine))
    data = nib.orientations.apply_orientation(np.asanyarray(img.dataobj), back)
    affine = np.asarray(img.affine, dtype=float) @ inv_ornt_aff(back, img.shape[:3])
    return header_image(data if dtype is None else data.astype(dtype, copy=False), affine,
                        original.header)


def _permute(arr, axes: tuple[int, int, int]) -> np.ndarray:
    """``arr`` with its 3 spatial axes permuted by ``axes`` (after a leading channel axis if 4-D)."""
    arr = np.asanyarray(arr)
    if arr.ndim == 3:
        return np.ascontiguousarray(arr.transpose(axes))
    if arr.ndim == 4:
        return np.ascontiguousarray(arr.transpose(0, *(a + 1 for a in axes)))
    raise ValueError(f"expected a 3-D (or channel-first 4-D) array, got shape {arr.shape}")


def to_network_order(data_lps: np.ndarray) -> np.ndarray:
    """LPS-frame array ``(x, y, z)`` -> network order ``(z, x, y)``.

    A 4-D array is taken as channel-first ``(c, x, y, z)`` -> ``(c, z, x, y)``.
    Returns a C-contiguous array.
    """
    return _permute(data_lps, (2, 0, 1))


def from_network_order(arr: np.ndarray) -> np.ndarray:
    """Network order ``(z, x, y)`` -> LPS-frame array ``(x, y, z)``.

    A 4-D array is taken as channel-first ``(c, z, x, y)`` -> ``(c, x, y, z)``.
    Returns a C-contiguous array.
    """
    return _permute(arr, (1, 2, 0))
