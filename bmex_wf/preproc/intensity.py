"""Intensity windowing and histogram matching with stored template landmarks.

``match_histogram`` reproduces SimpleITK's ``HistogramMatchingImageFilter``
(ITK 5) on float32 images, but takes the reference through its *landmarks*
(minimum, threshold, quantiles at the match points, maximum), which is all the
filter uses of it. The landmarks of the age templates ship with the package
(``bmex_wf/data/template_landmarks.json``), so no template image is needed at
run time.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from importlib import resources

import numpy as np

LOGGER = logging.getLogger(__name__)

#: Release settings of the histogram matching (spec 8.3 step 5, 8.4 step 4).
HISTOGRAM_LEVELS = 1024
MATCH_POINTS = 7

_LANDMARKS_FILE = "template_landmarks.json"
#: Voxels mapped per step of :func:`match_histogram`.
_CHUNK = 1 << 20


class LandmarksError(ValueError):
    """Unknown template or landmarks that do not fit the requested settings."""


def window_intensities(
    data: np.ndarray,
    lower_pct: float = 0.001,
    upper_pct: float = 99.999,
    out_max: float = 1000.0,
) -> np.ndarray:
    """Map the ``lower_pct``..``upper_pct`` percentile range linearly to ``0..out_max``.

    Percentiles are taken over the finite non-zero voxels (all finite voxels if
    none is non-zero), recomputed over all finite voxels if they are not finite
    or ``lo >= hi``, with ``(0, 1)`` as a last resort (spec 8.3 step 2). The
    result is clamped to ``[0, out_max]``; NaN voxels become 0 and infinities
    are clamped.

    Parameters
    ----------
    data : ndarray
        Image intensities, any shape.
    lower_pct, upper_pct : float
        Percentiles (0..100) mapped to 0 and ``out_max``.
    out_max : float
        Output value of the upper percentile.

    Returns
    -------
    ndarray
        float32 array of the input's shape.
    """
    if not 0.0 <= lower_pct < upper_pct <= 100.0:
        raise ValueError(
            f"percentiles must satisfy 0 <= lower < upper <= 100, got {lower_pct}, {upper_pct}"
        )
    data = np.asarray(data)
    lo, hi = _window_bounds(data, lower_pct, upper_pct)
    LOGGER.debug("intensity window %g..%g -> 0..%g", lo, hi, out_max)
    scaled = (data.astype(np.float64) - lo) * (out_max / (hi - lo))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=out_max, neginf=0.0)
    return np.clip(scaled, 0.0, out_max).astype(np.float32)


def _window_bounds(data: np.ndarray, lower_pct: float, upper_pct: float) -> tuple[float, float]:
    """Percentile bounds of the release's windowing, with its fallbacks."""
    finite = data[np.isfinite(data)].astype(np.float64)
    if finite.size == 0:
        return 0.0, 1.0
    nonzero = finite[finite != 0]
    candidates = (nonzero, finite) if nonzero.size else (finite,)
    for values in candidates:
        lo, hi = np.percentile(values, [lower_pct, upper_pct])
        if np.isfinite(lo) and np.isfinite(hi) and lo < hi:
            return float(lo), float(hi)
    return 0.0, 1.0


# --------------------------------------------------------------------------------------
# Histogram matching (SimpleITK HistogramMatchingImageFilter semantics)
# --------------------------------------------------------------------------------------
def compute_landmarks(
    data: np.ndarray,
    levels: int = HISTOGRAM_LEVELS,
    match_points: int = MATCH_POINTS,
    threshold_at_mean: bool = True,
) -> dict:
    """Histogram landmarks of an image, as ITK's histogram matching computes them.

    The values are taken as float32 (the pixel type the filter runs on). The
    histogram has ``levels`` equal bins from the threshold (the mean of all
    voxels, or the minimum) to the maximum, with the first bin stretched down
    to the minimum; only voxels in ``[threshold, maximum]`` are counted. The
    quantiles at ``j / (match_points + 1)`` are interpolated inside their bin
    as ``itk::Statistics::Histogram::Quantile`` does.

    Parameters
    ----------
    data : ndarray
        Intensities, any shape (a masked selection is fine); must be finite.
    levels : int
        Number of histogram bins.
    match_points : int
        Number of quantiles.
    threshold_at_mean : bool
        Count only voxels at or above the mean (ITK's ``ThresholdAtMeanIntensity``).

    Returns
    -------
    dict
        ``minimum``, ``maximum``, ``threshold``, ``quantiles`` (list) and the
        settings ``levels``, ``match_points``, ``threshold_at_mean``.
    """
    if levels < 1 or match_points < 1:
        raise ValueError(f"levels and match_points must be positive, got {levels}, {match_points}")
    values = np.asarray(data, dtype=np.float32).ravel()
    if values.size == 0:
        raise ValueError("cannot compute histogram landmarks of an empty image")
    if not np.all(np.isfinite(values)):
        raise ValueError("cannot compute histogram landmarks: the image has non-finite values")
    vmin = np.float32(values.min())
    vmax = np.float32(values.max())
    # ITK sums in double, then casts the mean to the measurement type (float32).
    mean = np.float32(values.sum(dtype=np.float64) / values.size)
    threshold = mean if threshold_at_mean else vmin
    mins, maxs = _bin_edges(threshold, vmax, vmin, levels)
    counts = _bin_counts(values, threshold, vmax, mins)
    delta = 1.0 / (match_points + 1.0)
    quantiles = [
        _histogram_quantile(counts, mins, maxs, j * delta) for j in range(1, match_points + 1)
    ]
    return {
        "minimum": float(vmin),
        "maximum": float(vmax),
        "threshold": float(threshold),
        "quantiles": quantiles,
        "levels": int(levels),
        "match_points": int(match_points),
        "threshold_at_mean": bool(threshold_at_mean),
    }


def _bin_edges(
    lower: np.float32, upper: np.float32, true_min: np.float32, levels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Bin minima and maxima in float32, as ``Histogram::Initialize`` builds them."""
    f32 = np.float32
    interval = (f32(upper) - f32(lower)) / f32(levels)
    steps = np.arange(levels + 1, dtype=np.float32)
    edges = (f32(lower) + steps * interval).astype(np.float32)
    mins = edges[:-1].copy()
    maxs = edges[1:].copy()
    maxs[-1] = upper
    mins[0] = true_min
    return mins, maxs


def _bin_counts(
    values: np.ndarray, lower: np.float32, upper: np.float32, mins: np.ndarray
) -> np.ndarray:
    """Counts of the values in ``[lower, upper]`` per bin (bin = last minimum <= value)."""
    inside = values[(values >= lower) & (values <= upper)]
    index = np.searchsorted(mins, inside, side="right") - 1
    return np.bincount(np.clip(index, 0, mins.size - 1), minlength=mins.size).astype(np.float64)


def _histogram_quantile(counts: np.ndarray, mins: np.ndarray, maxs: np.ndarray, p: float) -> float:
    """``itk::Statistics::Histogram::Quantile`` for one dimension (double arithmetic)."""
    total = counts.sum()
    if total == 0:
        return float(mins[0])
    if p < 0.5:
        p_n = np.cumsum(counts) / total
        k = int(np.argmax(p_n >= p)) if np.any(p_n >= p) else counts.size - 1
        p_prev = p_n[k - 1] if k > 0 else 0.0
        width = float(maxs[k]) - float(mins[k])
        return float(float(mins[k]) + ((p - p_prev) / (counts[k] / total)) * width)
    p_n = 1.0 - np.cumsum(counts[::-1]) / total
    m = int(np.argmax(p_n <= p)) if np.any(p_n <= p) else counts.size - 1
    k = counts.size - 1 - m
    p_prev = p_n[m - 1] if m > 0 else 1.0
    width = float(maxs[k]) - float(mins[k])
    return float(float(maxs[k]) - ((p_prev - p) / (counts[k] / total)) * width)


def _almost_zero(value: float) -> bool:
    """``itk::Math::AlmostEquals(value, 0.0)`` for doubles."""
    return abs(value) <= 0.1 * np.finfo(np.float64).eps


def match_histogram(
    data: np.ndarray,
    landmarks: dict,
    levels: int = HISTOGRAM_LEVELS,
    match_points: int = MATCH_POINTS,
    return_landmarks: bool = False,
) -> np.ndarray | tuple[np.ndarray, dict]:
    """Match the histogram of ``data`` to a reference given by its landmarks.

    Equals ``sitk.HistogramMatchingImageFilter`` (``levels`` histogram levels,
    ``match_points`` match points, threshold at mean as stored in the
    landmarks) on float32 images: the source landmarks are computed the same
    way, then intensities are mapped piecewise linearly between the source and
    reference landmarks ``[threshold, q1..qN, maximum]``; values below the
    source threshold map linearly from (source minimum -> reference minimum),
    values at or above the source maximum map to the reference maximum.

    Parameters
    ----------
    data : ndarray
        Source intensities, any shape; must be finite.
    landmarks : dict
        Reference landmarks from :func:`compute_landmarks` or
        :func:`template_landmarks`.
    levels, match_points : int
        Must equal the settings the landmarks were computed with.
    return_landmarks : bool
        Also return the source landmarks (for provenance).

    Returns
    -------
    ndarray
        float32 array of the input's shape (and the source landmarks dict if
        ``return_landmarks``).
    """
    _check_landmarks(landmarks, levels, match_points)
    values = np.asarray(data, dtype=np.float32)
    source = compute_landmarks(
        values, levels, match_points, landmarks.get("threshold_at_mean", True)
    )
    src_table = np.array(
        [source["threshold"], *source["quantiles"], source["maximum"]], dtype=np.float64
    )
    ref_table = np.array(
        [landmarks["threshold"], *landmarks["quantiles"], landmarks["maximum"]], dtype=np.float64
    )
    n_points = src_table.size
    gradients = np.zeros(n_points - 1)
    for j in range(n_points - 1):
        denominator = src_table[j + 1] - src_table[j]
        if not _almost_zero(denominator):
            gradients[j] = (ref_table[j + 1] - ref_table[j]) / denominator
    denominator = src_table[0] - source["minimum"]
    lower_gradient = (
        0.0 if _almost_zero(denominator) else (ref_table[0] - landmarks["minimum"]) / denominator
    )

    # Per segment: reference base value, source base value, gradient. Segment 0 lies below
    # the source threshold, segment n_points at or above the source maximum (ITK's upper
    # gradient is always 0 there), segment j between landmarks j-1 and j.
    ref_base = np.concatenate([[landmarks["minimum"]], ref_table])
    src_base = np.concatenate([[source["minimum"]], src_table])
    slope = np.concatenate([[lower_gradient], gradients, [0.0]])
    out = np.empty(values.shape, dtype=np.float32)
    flat_in, flat_out = values.reshape(-1), out.reshape(-1)
    for start in range(0, flat_in.size, _CHUNK):  # chunks bound the float64 temporaries
        chunk = flat_in[start : start + _CHUNK]
        segment = _segments(chunk, src_table)
        flat_out[start : start + _CHUNK] = (
            ref_base[segment] + (chunk - src_base[segment]) * slope[segment]
        )
    return (out, source) if return_landmarks else out


def _segments(values: np.ndarray, table: np.ndarray) -> np.ndarray:
    """Index of the first table entry each value lies below (table size if none)."""
    if np.all(np.diff(table) >= 0):
        return np.searchsorted(table, values, side="right")
    segment = np.full(values.shape, table.size, dtype=np.intp)
    for j in range(table.size - 1, -1, -1):
        segment[values < table[j]] = j
    return segment


def _check_landmarks(landmarks: dict, levels: int, match_points: int) -> None:
    """Raise :class:`LandmarksError` unless the landmarks fit the settings."""
    missing = {"minimum", "maximum", "threshold", "quantiles"} - set(landmarks)
    if missing:
        raise LandmarksError(f"histogram landmarks lack {sorted(missing)}")
    if len(landmarks["quantiles"]) != match_points:
        raise LandmarksError(
            f"landmarks have {len(landmarks['quantiles'])} quantiles but {match_points} match points were asked"
        )
    if landmarks.get("levels", levels) != levels:
        raise LandmarksError(
            f"landmarks were computed with {landmarks['levels']} histogram levels, not {levels}"
        )


@lru_cache(maxsize=1)
def _load_landmarks_table() -> dict:
    text = resources.files("bmex_wf").joinpath("data", _LANDMARKS_FILE).read_text()
    return json.loads(text)


def template_names() -> list[str]:
    """Names of the templates whose landmarks ship with the package."""
    return sorted(_load_landmarks_table()["templates"])


def template_landmarks(name: str) -> dict:
    """Stored histogram landmarks of an age template, e.g. ``"Template-Month24-T1w"``.

    Raises
    ------
    LandmarksError
        If no template of that name is known.
    """
    table = _load_landmarks_table()["templates"]
    key = name.removesuffix(".nii.gz")
    if key not in table:
        raise LandmarksError(
            f"unknown template {name!r}; known templates: {', '.join(sorted(table))}"
        )
    return dict(table[key])
