"""Synthetic full heads built around a skull-stripped brain, for tests.

No real full-head scan ships with the project (the shared images and nilearn's
MNI152 are skull-stripped), so masking, skull add-back and the ``auto`` mask
choice are tested on heads made here: the brain is kept voxel for voxel and
wrapped in a dark CSF gap, a dark skull shell and a bright scalp shell, with a
noisy (never exactly zero) air background. Shell thicknesses wobble smoothly
around their nominal values, so different seeds give different heads.
"""

from __future__ import annotations

import logging
import math

import nibabel as nib
import numpy as np
from scipy import ndimage

LOGGER = logging.getLogger(__name__)

#: Shell intensities relative to the brain's 95th percentile.
GAP_LEVEL = 0.12
SKULL_LEVEL = 0.04
SCALP_LEVEL = 1.15
#: Air level (before noise) relative to the brain's 95th percentile.
AIR_LEVEL = 0.01


def _pad_for_margin(data: np.ndarray, affine: np.ndarray, brain: np.ndarray, margin_vox):
    """Zero-pad ``data``/``brain`` so the brain has ``margin_vox`` free voxels on every side."""
    coords = np.nonzero(brain)
    before = [max(0, m - int(c.min())) for c, m in zip(coords, margin_vox)]
    after = [max(0, int(c.max()) + m + 1 - n) for c, m, n in zip(coords, margin_vox, brain.shape)]
    if not any(before) and not any(after):
        return data, affine, brain
    widths = list(zip(before, after))
    shift = np.eye(4)
    shift[:3, 3] = -np.asarray(before, dtype=float)
    return np.pad(data, widths), affine @ shift, np.pad(brain, widths)


def _smooth_field(shape, rng: np.random.Generator, amplitude: float, terms: int = 3) -> np.ndarray:
    """A smooth random field of peak ``amplitude``: a few separable cosines of 0.5-2 cycles."""
    field = np.zeros(shape, dtype=np.float32)
    for _ in range(terms):
        factors = [
            np.cos(2 * np.pi * rng.uniform(0.5, 2.0) * np.arange(n) / n + rng.uniform(0, 2 * np.pi))
            for n in shape
        ]
        field += (factors[0][:, None, None] * factors[1][None, :, None]
                  * factors[2][None, None, :]).astype(np.float32)
    peak = float(np.abs(field).max()) or 1.0
    return field * np.float32(amplitude / peak)


def synthetic_head(
    brain_img: nib.spatialimages.SpatialImage,
    *,
    seed: int = 0,
    gap_mm: float = 2.5,
    skull_mm: float = 5.0,
    scalp_mm: float = 5.0,
    wobble_mm: float = 1.0,
    noise: float = 0.02,
) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """Wrap a skull-stripped brain in CSF, skull and scalp shells.

    Parameters
    ----------
    brain_img
        Skull-stripped brain (background exactly 0), any orientation.
    seed
        Seed of the shell-thickness wobble and of the background noise.
    gap_mm, skull_mm, scalp_mm
        Nominal thickness of the dark CSF gap, the dark skull and the bright scalp.
    wobble_mm
        Peak deviation of each shell boundary from its nominal distance.
    noise
        Standard deviation of the Gaussian noise outside the brain, relative to the
        brain's 95th percentile (the air is its absolute value, hence never 0).

    Returns
    -------
    head_img, brain_mask_img
        float32 head and uint8 true brain mask, on the brain's grid (zero-padded
        first where the brain lies too close to the border for the shells).
    """
    from ..image.morphology import clean_mask

    data = np.asanyarray(brain_img.dataobj).astype(np.float32)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3 or not np.any(data):
        raise ValueError("synthetic_head needs a non-empty 3-D skull-stripped brain image")
    zooms = np.asarray(brain_img.header.get_zooms()[:3], dtype=float)
    brain = clean_mask(data != 0)
    total_mm = gap_mm + skull_mm + scalp_mm + 2 * wobble_mm + 3 * float(zooms.max())
    margin = [math.ceil(total_mm / z) for z in zooms]
    data, affine, brain = _pad_for_margin(data, brain_img.affine, brain, margin)

    rng = np.random.default_rng(seed)
    ref = float(np.percentile(data[brain], 95))
    coords = np.nonzero(brain)
    box = tuple(
        slice(max(0, int(c.min()) - m), min(n, int(c.max()) + m + 1))
        for c, m, n in zip(coords, margin, brain.shape)
    )
    sub = brain[box]
    dist = ndimage.distance_transform_edt(~sub, sampling=zooms)
    bounds = np.cumsum([gap_mm, skull_mm, scalp_mm])
    levels = np.array([GAP_LEVEL, SKULL_LEVEL, SCALP_LEVEL, AIR_LEVEL]) * ref
    layer = np.zeros(sub.shape, dtype=np.int8)
    for bound in bounds:
        wobbled = bound + _smooth_field(sub.shape, rng, wobble_mm)
        layer += (dist > wobbled).astype(np.int8)

    head = np.full(data.shape, AIR_LEVEL * ref, dtype=np.float32)
    shells = levels[layer].astype(np.float32)
    head[box] = shells
    head += rng.normal(0.0, noise * ref, size=head.shape).astype(np.float32)
    head = np.abs(head)
    head[brain] = data[brain]
    LOGGER.debug("Synthetic head: shells %s mm, reference %.1f, seed %d", bounds, ref, seed)

    header = brain_img.header.copy() if isinstance(brain_img, nib.Nifti1Image) else None
    head_img = nib.Nifti1Image(head, affine, header)
    head_img.set_data_dtype(np.float32)
    mask_img = nib.Nifti1Image(brain.astype(np.uint8), affine, header)
    mask_img.set_data_dtype(np.uint8)
    for image in (head_img, mask_img):
        image.header.set_slope_inter(1.0, 0.0)
    return head_img, mask_img
