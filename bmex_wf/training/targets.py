"""Automatic 4-class tissue labels (0 BG, 1 CSF, 2 GM, 3 WM) for training targets.

No manual labels exist, so the segmentation target is computed from the clean
image: the intensities inside the brain mask are split into three classes by
multi-Otsu thresholds (scikit-image), each class is modelled as a Gaussian
(its mean, spread and share; optional EM refinement, off by default because
the maximum-likelihood mixture of a partial-volume-skewed brain histogram
drifts away from tissue classes), and each voxel's class posteriors are
smoothed with a small Gaussian (sigma 1 voxel, a cheap stand-in for a Markov
random field prior) and the most probable component wins. Components are
named by intensity rank using the contrast's tissue order (:func:`tissue_order`):
in T1w after the first months CSF < GM < WM; in T2w WM < GM < CSF; in the
first months of life grey and white matter swap (unmyelinated white matter).
Voxels outside the mask are background.
"""

from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ..labels import CSF, GM, WM

LOGGER = logging.getLogger(__name__)


#: Voxels used for the mixture fit (a random subset keeps it fast).
MAX_FIT_VOXELS = 200_000


class TargetError(ValueError):
    """The image or mask cannot give tissue labels."""


def fit_gmm(values: np.ndarray, components: int = 3, iterations: int = 0,
            tol: float = 1e-5) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A 1-D Gaussian mixture initialised from multi-Otsu classes, refined by ``iterations`` EM steps.

    Returns
    -------
    means, stds, weights : ndarray
        Per component, sorted by increasing mean.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size < components * 10:
        raise TargetError(f"too few voxels ({x.size}) to fit {components} tissue classes")
    from skimage.filters import threshold_multiotsu

    floor = 1e-3 * (x.max() - x.min() + 1e-6)
    classes = np.digitize(x, threshold_multiotsu(x, classes=components))
    if np.bincount(classes, minlength=components).min() < 2:
        raise TargetError("the brain intensities do not split into three tissue classes")
    means = np.array([x[classes == k].mean() for k in range(components)])
    stds = np.maximum([x[classes == k].std() for k in range(components)], floor)
    weights = np.bincount(classes, minlength=components) / x.size
    previous = -np.inf
    for _ in range(iterations):
        log_p = _log_densities(x, means, stds, weights)
        log_norm = np.logaddexp.reduce(log_p, axis=1)
        resp = np.exp(log_p - log_norm[:, None])
        total = resp.sum(axis=0) + 1e-12
        weights = total / x.size
        means = (resp * x[:, None]).sum(axis=0) / total
        stds = np.sqrt((resp * (x[:, None] - means) ** 2).sum(axis=0) / total)
        stds = np.maximum(stds, floor)
        likelihood = log_norm.mean()
        if likelihood - previous < tol:
            break
        previous = likelihood
    order = np.argsort(means)
    return means[order], stds[order], weights[order]


def _log_densities(x: np.ndarray, means, stds, weights) -> np.ndarray:
    z = (x[:, None] - means) / stds
    return np.log(weights) - np.log(stds) - 0.5 * z**2 - 0.5 * np.log(2 * np.pi)


def tissue_labels(data: np.ndarray, mask: np.ndarray, order: tuple[int, int, int] = (CSF, GM, WM),
                  smoothing: float = 1.0, seed: int = 0) -> np.ndarray:
    """Label every voxel 0 BG / 1 CSF / 2 GM / 3 WM (see the module docstring).

    Parameters
    ----------
    data : ndarray
        Clean 3-D image.
    mask : ndarray
        Brain mask (non-zero inside), same shape.
    order : tuple of 3 ints
        Labels of the mixture components from darkest to brightest.
    smoothing : float
        Gaussian sigma (voxels) applied to the posteriors; 0 disables it.
    seed : int
        Seed of the voxel subset used for the fit.

    Returns
    -------
    ndarray
        uint8 labels, same shape.
    """
    data = np.asarray(data, dtype=np.float32)
    inside = np.asarray(mask) > 0
    if data.shape != inside.shape:
        raise TargetError(f"image shape {data.shape} differs from mask shape {inside.shape}")
    if sorted(order) != [CSF, GM, WM]:
        raise TargetError(f"order must be a permutation of (1, 2, 3), got {order}")
    values = data[inside]
    rng = np.random.default_rng(seed)
    sample = values if values.size <= MAX_FIT_VOXELS else rng.choice(values, MAX_FIT_VOXELS, replace=False)
    means, stds, weights = fit_gmm(sample)
    LOGGER.debug("tissue mixture means %s stds %s weights %s", means, stds, weights)
    log_p = _log_densities(values.astype(np.float64), means, stds, weights)
    post = np.exp(log_p - np.logaddexp.reduce(log_p, axis=1)[:, None]).astype(np.float32)
    labels = np.zeros(data.shape, dtype=np.uint8)
    if smoothing > 0:
        maps = np.zeros((3, *data.shape), dtype=np.float32)
        maps[:, inside] = post.T
        post = np.stack([ndimage.gaussian_filter(m, smoothing)[inside] for m in maps], axis=1)
    labels[inside] = np.asarray(order, dtype=np.uint8)[np.argmax(post, axis=1)]
    return labels
