"""Tissue contrast (TCT) and the release's quality index (spec 8.4 step 12).

Degenerate cases (a missing GM or WM label, zero spread, a zero TCT after
enhancement) give ``NaN`` with a :class:`RuntimeWarning` rather than an error,
so a whole run is not lost to its quality number.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

#: Labels read as grey and white matter (the release's QI code: 2 = GM, 3 = WM).
GM_LABEL = 2
WM_LABEL = 3


def tissue_contrast(data: np.ndarray, labels: np.ndarray) -> float:
    """TCT = |mean(GM) - mean(WM)| / sqrt(var(GM) + var(WM)) over labels 2 and 3.

    Standard deviations are population ones (``ddof=0``).

    Parameters
    ----------
    data : ndarray
        Intensities.
    labels : ndarray
        Label map of the same shape (0 BG, 1 CSF, 2 GM, 3 WM).

    Returns
    -------
    float
        The contrast, or NaN (with a RuntimeWarning) when a label is missing or
        both classes have zero spread.
    """
    data = np.asarray(data)
    labels = np.asarray(labels)
    if data.shape != labels.shape:
        raise ValueError(
            f"image shape {data.shape} differs from the label map shape {labels.shape}"
        )
    gm = data[labels == GM_LABEL].astype(np.float64)
    wm = data[labels == WM_LABEL].astype(np.float64)
    missing = [name for name, values in (("GM (2)", gm), ("WM (3)", wm)) if values.size == 0]
    if missing:
        warnings.warn(
            f"tissue contrast undefined: no voxel labelled {' or '.join(missing)}",
            RuntimeWarning,
            stacklevel=2,
        )
        return math.nan
    spread = math.sqrt(gm.var() + wm.var())
    if spread == 0:
        warnings.warn(
            "tissue contrast undefined: GM and WM intensities have zero spread",
            RuntimeWarning,
            stacklevel=2,
        )
        return math.nan
    return abs(gm.mean() - wm.mean()) / spread


def quality_index(tct_before: float, tct_after: float) -> float:
    """QI = TCT(original matched to the template) / TCT(enhanced); NaN if undefined."""
    if not (math.isfinite(tct_before) and math.isfinite(tct_after)) or tct_after == 0:
        warnings.warn(
            f"quality index undefined for TCT before {tct_before}, after {tct_after}",
            RuntimeWarning,
            stacklevel=2,
        )
        return math.nan
    return tct_before / tct_after


def quality_report(original_matched: np.ndarray, enhanced: np.ndarray, labels: np.ndarray) -> dict:
    """TCT before and after enhancement and their QI, as a dict (``tct_before``, ``tct_after``, ``qi``)."""
    before = tissue_contrast(original_matched, labels)
    after = tissue_contrast(enhanced, labels)
    # An undefined TCT has been warned about already.
    qi = (
        quality_index(before, after) if math.isfinite(before) and math.isfinite(after) else math.nan
    )
    return {"tct_before": before, "tct_after": after, "qi": qi}
