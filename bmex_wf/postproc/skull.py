"""Put the enhanced brain back into the whole-head image (spec 8.4 step 11, made consistent)."""

from __future__ import annotations

import numpy as np

from bmex_wf.preproc.intensity import HISTOGRAM_LEVELS, compute_landmarks, match_histogram

#: Quantiles matched between the enhanced and the original brain (finer than the
#: template matching's 7, so the whole in-mask distribution follows the original).
SKULL_MATCH_POINTS = 31


def add_skull_back(
    enhanced_brain: np.ndarray, original: np.ndarray, mask: np.ndarray
) -> np.ndarray:
    """Whole-head image: the enhanced brain in the original's intensity scale, the original outside.

    Inside the mask, the enhanced brain is histogram-matched (ITK semantics with
    :data:`SKULL_MATCH_POINTS` match points and no mean threshold, so the whole
    in-mask distribution is matched) to the original image's in-mask
    intensities; outside the mask the original voxels are kept
    unchanged, so the output looks like the input outside the brain.

    Parameters
    ----------
    enhanced_brain : ndarray
        Enhanced brain (any intensity scale), same shape as ``original``.
    original : ndarray
        Whole-head input image.
    mask : ndarray
        Brain mask (non-zero = brain).

    Returns
    -------
    ndarray
        float32 whole-head image.
    """
    enhanced_brain = np.asarray(enhanced_brain)
    original = np.asarray(original)
    mask = np.asarray(mask) > 0
    if not enhanced_brain.shape == original.shape == mask.shape:
        raise ValueError(
            f"shapes differ: enhanced {enhanced_brain.shape}, original {original.shape}, "
            f"mask {mask.shape}"
        )
    if not mask.any():
        raise ValueError("the brain mask is empty")
    reference = compute_landmarks(
        original[mask], HISTOGRAM_LEVELS, SKULL_MATCH_POINTS, threshold_at_mean=False
    )
    out = original.astype(np.float32)
    out[mask] = match_histogram(
        enhanced_brain[mask], reference, HISTOGRAM_LEVELS, SKULL_MATCH_POINTS
    )
    return out
