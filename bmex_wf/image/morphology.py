"""Binary-mask morphology: largest component, hole filling, bounding box, cleaning."""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component of ``mask`` (empty stays empty)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_small_holes(mask: np.ndarray, max_size: int = 1) -> np.ndarray:
    """Fill enclosed background components of at most ``max_size`` voxels."""
    holes = ndimage.binary_fill_holes(mask) & ~mask
    labels, count = ndimage.label(holes)
    if not count:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    small = np.flatnonzero(sizes <= max_size)
    return mask | (np.isin(labels, small[small > 0]))


def bounding_box(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels (clipped)."""
    coords = np.nonzero(mask)
    if not coords[0].size:
        return tuple(slice(0, n) for n in mask.shape)
    return tuple(
        slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n))
        for c, n in zip(coords, mask.shape)
    )


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Largest face-connected component of ``mask`` with every enclosed hole filled."""
    mask = np.asarray(mask, dtype=bool)
    box = bounding_box(mask)
    out = np.zeros(mask.shape, dtype=bool)
    out[box] = ndimage.binary_fill_holes(largest_component(mask[box]))
    return out
