"""Synthetic image degradations (TorchIO) applied to training crops.

Each kind corrupts a clean crop the way BME-X was trained to undo: head motion,
ghosting, k-space spikes, noise, blur, thick slices (anisotropic down-sampling),
a residual bias field and a gamma change. Degradations run on crops (a whole
300³ motion simulation costs seconds), then the crop is brought back to the
clean crop's intensity distribution by histogram matching, the crop-level
stand-in for the template matching that inference applies to whole images.

Intensities are handled in template units (0..1000): a crop is divided by
``INTENSITY_SCALE`` before TorchIO sees it, so the noise standard deviations
below are fractions of the template range.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

LOGGER = logging.getLogger(__name__)

#: Template intensity range; crops are scaled to 0..1 for the TorchIO transforms.
INTENSITY_SCALE = 1000.0

#: Parameter ranges of every degradation kind (TorchIO argument names and values).
#: ``motion``: rotations up to ±8°, translations up to ±8 mm, 2 movements;
#: ``ghosting``: 2-8 ghosts of relative intensity 0.3-0.8 along any axis;
#: ``spike``: 1-3 k-space spikes of intensity 0.3-1.0;
#: ``noise``: Gaussian noise, std 2-8 % of the template range (20-80 units);
#: ``blur``: Gaussian blur, std 0.5-1.5 mm;
#: ``anisotropy``: thick slices, one random axis down-sampled 2-5 times and back;
#: ``bias``: polynomial bias field (order 3) with coefficients up to ±0.3;
#: ``gamma``: intensity gamma with log-gamma in ±0.3.
DEGRADATIONS: dict[str, dict] = {
    "motion": {"degrees": (-8.0, 8.0), "translation": (-8.0, 8.0), "num_transforms": 2},
    "ghosting": {"num_ghosts": (2, 8), "intensity": (0.3, 0.8), "axes": (0, 1, 2)},
    "spike": {"num_spikes": (1, 3), "intensity": (0.3, 1.0)},
    "noise": {"mean": 0.0, "std": (0.02, 0.08)},
    "blur": {"std": (0.5, 1.5)},
    "anisotropy": {"axes": (0, 1, 2), "downsampling": (2.0, 5.0)},
    "bias": {"coefficients": (-0.3, 0.3), "order": 3},
    "gamma": {"log_gamma": (-0.3, 0.3)},
}

#: Order in which several kinds are applied to one crop: intensity changes, then
#: resolution loss, then k-space artefacts, then noise last (as in acquisition).
APPLY_ORDER = ("bias", "gamma", "blur", "anisotropy", "motion", "ghosting", "spike", "noise")

#: How often each kind is drawn for a training crop (relative weights).
TRAIN_WEIGHTS = {"motion": 3.0, "ghosting": 1.5, "spike": 1.0, "noise": 3.0, "blur": 1.5,
                 "anisotropy": 2.5, "bias": 1.0, "gamma": 1.0}

_CLASSES = {
    "motion": "RandomMotion", "ghosting": "RandomGhosting", "spike": "RandomSpike",
    "noise": "RandomNoise", "blur": "RandomBlur", "anisotropy": "RandomAnisotropy",
    "bias": "RandomBiasField", "gamma": "RandomGamma",
}


class DegradationError(ValueError):
    """Unknown degradation kind or unusable crop."""


def check_kinds(kinds: Sequence[str]) -> tuple[str, ...]:
    """Validate degradation names and return them in :data:`APPLY_ORDER`."""
    unknown = sorted(set(kinds) - set(DEGRADATIONS))
    if unknown:
        raise DegradationError(f"unknown degradation kind(s) {unknown}; known: {', '.join(DEGRADATIONS)}")
    return tuple(kind for kind in APPLY_ORDER if kind in kinds)


def make_transform(kind: str):
    """TorchIO transform of one degradation kind with its documented ranges."""
    import torchio as tio

    check_kinds([kind])
    return getattr(tio, _CLASSES[kind])(**DEGRADATIONS[kind])


def random_kinds(rng: np.random.Generator, max_kinds: int = 3, p_clean: float = 0.1,
                 allowed: Sequence[str] = ()) -> tuple[str, ...]:
    """Draw the kinds for one training crop: none with probability ``p_clean``, else 1..max_kinds.

    ``allowed`` limits the draw to those kinds (empty: every kind of :data:`TRAIN_WEIGHTS`).
    """
    if rng.random() < p_clean:
        return ()
    names = list(check_kinds(allowed)) if allowed else list(TRAIN_WEIGHTS)
    weights = np.array([TRAIN_WEIGHTS[n] for n in names])
    count = int(rng.integers(1, min(max_kinds, len(names)) + 1))
    chosen = rng.choice(len(names), size=count, replace=False, p=weights / weights.sum())
    return check_kinds([names[i] for i in chosen])


def degrade(crop: np.ndarray, kinds: Sequence[str], seed: int, spacing_mm: float = 0.8,
            renormalize: bool = True) -> np.ndarray:
    """Apply the degradation ``kinds`` to a clean 3-D crop (template units).

    Parameters
    ----------
    crop : ndarray
        Clean 3-D crop, intensities in template units (about 0..1000).
    kinds : sequence of str
        Names from :data:`DEGRADATIONS` (any order; applied in :data:`APPLY_ORDER`).
    seed : int
        Seed of the random parameters; the same seed gives the same result.
    spacing_mm : float
        Isotropic voxel size of the crop (mm), used by motion, blur and anisotropy.
    renormalize : bool
        Histogram-match the result to the clean crop (see the module docstring).

    Returns
    -------
    ndarray
        float32 degraded crop of the same shape, non-negative.
    """
    import torchio as tio

    crop = np.asarray(crop, dtype=np.float32)
    if crop.ndim != 3:
        raise DegradationError(f"a crop must be 3-D, got shape {crop.shape}")
    kinds = check_kinds(kinds)
    if not kinds:
        return crop.copy()
    subject = tio.Subject(image=tio.ScalarImage(
        tensor=torch.from_numpy(crop / INTENSITY_SCALE)[None], affine=np.diag([spacing_mm] * 3 + [1.0])))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        for kind in kinds:
            subject = make_transform(kind)(subject)
    out = subject["image"].data[0].numpy().astype(np.float32) * INTENSITY_SCALE
    out = np.clip(np.nan_to_num(out, nan=0.0), 0.0, None)
    if renormalize:
        out = match_to_reference(out, crop)
    return out


def match_to_reference(data: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Histogram-match ``data`` to ``reference`` (SimpleITK semantics, as at inference)."""
    from ..preproc.intensity import compute_landmarks, match_histogram

    if not np.any(reference > 0) or float(data.max()) <= float(data.min()):
        return data.astype(np.float32)
    matched = match_histogram(data, compute_landmarks(reference))
    return np.clip(matched, 0.0, None).astype(np.float32)
