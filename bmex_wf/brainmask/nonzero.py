"""The ``nonzero`` source: the non-zero voxels of a skull-stripped image, and how to tell one."""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np
from scipy import ndimage

from bmex_wf.brainmask.common import _data3d, _name, _zooms, mask_image
from bmex_wf.brainmask.errors import BrainMaskError
from bmex_wf.image.morphology import clean_mask

LOGGER = logging.getLogger(__name__)


def nonzero_mask(img) -> nib.Nifti1Image:
    """Mask of a skull-stripped image: its non-zero voxels, cleaned."""
    data = _data3d(img)
    mask = clean_mask(np.isfinite(data) & (data != 0))
    if not mask.any():
        raise BrainMaskError(f"{_name(img)}: no non-zero voxel; cannot make a 'nonzero' mask")
    return mask_image(mask, img)


def _border_faces(array: np.ndarray):
    for axis in range(array.ndim):
        for index in (0, -1):
            yield np.take(array, index, axis=axis)


def skull_stripped_evidence(img) -> dict:
    """Measurements that tell a skull-stripped image from a full head.

    Returns a dict with ``zero_fraction`` (exact zeros among all voxels),
    ``border_zero_fraction`` (exact zeros among the voxels of the 6 array faces),
    ``faces_touched`` (faces holding any non-zero voxel), ``outer_zero_fraction``
    (share of the zeros that form background connected to the array border) and
    ``rim_ratio`` (median intensity of the outer 3 mm of the non-zero region over the
    median of the next 3-15 mm: a bright scalp over a dark skull gives < 0.5 ... > 2;
    a brain's cortex over white matter stays near 1).
    """
    data = _data3d(img)
    zero = ~np.isfinite(data) | (data == 0)
    faces = list(_border_faces(zero))
    border = np.concatenate([f.ravel() for f in faces])
    evidence = {
        "zero_fraction": float(zero.mean()),
        "border_zero_fraction": float(border.mean()),
        "faces_touched": int(sum(not f.all() for f in faces)),
    }
    labels, _ = ndimage.label(zero)
    edge_labels = np.unique(np.concatenate([np.ravel(f) for f in _border_faces(labels)]))
    edge_labels = edge_labels[edge_labels > 0]
    outer = np.isin(labels, edge_labels)
    evidence["outer_zero_fraction"] = float(outer.sum() / max(int(zero.sum()), 1))
    evidence["rim_ratio"] = _rim_ratio(data, ~outer, _zooms(img))
    return evidence


def _rim_ratio(data: np.ndarray, body: np.ndarray, zooms: np.ndarray) -> float:
    """Median of the outer 3 mm of ``body`` over the median of its 3-15 mm layer."""
    if not body.any():
        return float("nan")
    coords = np.nonzero(body)
    box = tuple(slice(max(int(c.min()) - 1, 0), int(c.max()) + 2) for c in coords)
    depth = ndimage.distance_transform_edt(body[box], sampling=zooms)
    values = data[box].astype(np.float32)
    rim = values[(depth > 0) & (depth <= 3.0)]
    inner = values[(depth > 3.0) & (depth <= 15.0)]
    if rim.size == 0 or inner.size == 0:
        return float("nan")
    inner_median = float(np.median(inner))
    return float(np.median(rim)) / inner_median if inner_median > 0 else float("inf")


def looks_skull_stripped(img, evidence: dict | None = None) -> bool:
    """Whether ``img`` looks already skull-stripped (exact-zero background around a brain).

    True when at least 30 % of the voxels are exactly 0, at least 90 % of the
    array-face voxels are 0, the non-zero region touches at most 2 of the 6 faces,
    the zeros are mostly (>= 90 %) one background connected to the border, and the
    outer layer of the non-zero region is not a bright rim over a dark shell
    (``rim_ratio`` below 2, i.e. no scalp over skull).
    """
    ev = evidence or skull_stripped_evidence(img)
    stripped = (
        ev["zero_fraction"] >= 0.30
        and ev["border_zero_fraction"] >= 0.90
        and ev["faces_touched"] <= 2
        and ev["outer_zero_fraction"] >= 0.90
        and not ev["rim_ratio"] >= 2.0
    )
    LOGGER.debug("Skull-stripped evidence for %s: %s -> %s", _name(img), ev, stripped)
    return bool(stripped)
