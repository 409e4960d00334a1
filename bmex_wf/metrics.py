"""Image-quality and overlap measures used by training, the demo and the benchmarks."""

from __future__ import annotations

import math

import numpy as np

#: Template intensity range (network output units): the PSNR peak of template-unit images.
TEMPLATE_PEAK = 1000.0


def psnr(output, target, mask, peak: float = TEMPLATE_PEAK) -> float:
    """Peak signal-to-noise ratio (dB) inside ``mask``."""
    diff = (np.asarray(output, np.float64) - np.asarray(target, np.float64))[np.asarray(mask, bool)]
    mse = float(np.mean(diff**2)) if diff.size else 0.0
    return float("inf") if mse == 0 else 10.0 * math.log10(peak**2 / mse)


def fit_affine(values, reference, mask) -> np.ndarray:
    """``a * values + b`` with ``a, b`` fitted to ``reference`` by least squares inside ``mask``."""
    inside = np.asarray(mask, bool)
    x = np.asarray(values, np.float64)
    design = np.stack([x[inside], np.ones(int(inside.sum()))], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.asarray(reference, np.float64)[inside], rcond=None)
    return a * x + b


def _range(reference: np.ndarray, inside: np.ndarray) -> float:
    """Intensity range of ``reference`` inside the boolean mask ``inside`` (the fitted peak)."""
    return float(reference[inside].max() - reference[inside].min())


def fitted_psnr(output, reference, mask) -> float:
    """Scale-free PSNR (dB): ``output`` is fitted to ``reference`` by ``a·x+b`` first.

    The peak is the reference's intensity range inside ``mask``.
    """
    inside = np.asarray(mask, bool)
    ref = np.asarray(reference, np.float64)
    return psnr(fit_affine(output, ref, inside), ref, inside, peak=_range(ref, inside))


def ssim(output, target, mask, peak: float = TEMPLATE_PEAK) -> float:
    """Mean structural similarity (skimage, 7³ windows) over the voxels in ``mask``."""
    from skimage.metrics import structural_similarity

    inside = np.asarray(mask, bool)
    _, full = structural_similarity(np.asarray(target, np.float64), np.asarray(output, np.float64),
                                    data_range=peak, full=True)
    return float(full[inside].mean()) if inside.any() else float(full.mean())


def fitted_ssim(output, reference, mask) -> float:
    """SSIM after the least-squares fit of :func:`fitted_psnr`, with the same peak."""
    inside = np.asarray(mask, bool)
    ref = np.asarray(reference, np.float64)
    return ssim(fit_affine(output, ref, inside) * inside, ref * inside, inside, peak=_range(ref, inside))


def dice(a, b) -> float:
    """Dice overlap of two boolean arrays (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def correlation(a, b, mask) -> float:
    """Pearson correlation inside ``mask``."""
    inside = np.asarray(mask, bool)
    return float(np.corrcoef(np.asarray(a, np.float64)[inside], np.asarray(b, np.float64)[inside])[0, 1])
