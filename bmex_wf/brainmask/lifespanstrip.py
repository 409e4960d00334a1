"""LifespanStrip brain masks: network S with the release's pre- and post-processing.

Spec section 8.3, on any input orientation: the image is reoriented to LPS
(exact voxel permutation) and fed in network order, so the network sees what the
release feeds it for an input in its expected orientation; the mask is put back on
the input's own grid at the end.

Pre-processing: intensity window (0.001-99.999th percentile -> 0..1000), N4,
resampling to 1.6 mm on the release's centred grid, histogram matching to the
LifespanStrip template (``template.hdr``/``.img`` beside ``T1T2w-model.pt``), /10000.
Inference: 64³ sliding windows (:func:`bmex_wf.models.inference.skullstrip_volume`).
Post-processing: brain probability = channel 2 + channel 3, trilinear upsampling
(``align_corners=True``) to the full-resolution grid, argmax over (background,
brain) with ties to background, binary opening with a radius-3 ball, largest
face-connected component, holes of one voxel filled.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..image.morphology import bounding_box, fill_small_holes, largest_component
from .common import mask_image
from .errors import BrainMaskError, SourceUnavailable

LOGGER = logging.getLogger(__name__)

#: Grid spacing (mm) the network runs at, and the input scaling (spec 8.3 steps 4 and 6).
STRIP_SPACING_MM = 1.6
STRIP_SCALE = 10000.0
#: Output channels whose sum is the brain probability (spec 8.3 step 8).
BRAIN_CHANNELS = (2, 3)
#: Radius (voxels) of the opening ball (spec 8.3 step 10).
OPENING_RADIUS = 3


def find_lifespanstrip(models_dir=None) -> tuple[Path, Path]:
    """Paths of ``T1T2w-model.pt`` and of its ``template.hdr`` (with ``template.img``).

    Raises
    ------
    SourceUnavailable
        When the checkpoint is in none of the model directories, or its intensity
        template is not beside it.
    """
    from ..models.registry import find_file, search_dirs, skullstrip_entry

    entry = skullstrip_entry()
    model = find_file(entry.file, models_dir)
    if model is None:
        dirs = ", ".join(str(d) for d in search_dirs(models_dir))
        raise SourceUnavailable(
            f"{entry.file}: LifespanStrip weights not found (searched {dirs}); put the "
            "official checkpoint and its template.hdr/.img in one of these folders, or "
            "choose another mask source")
    template = model.parent / entry.template
    missing = [p.name for p in (template, model.parent / (entry.template_data or ""))
               if not p.is_file()]
    if missing:
        raise SourceUnavailable(
            f"{model.parent}: LifespanStrip intensity template missing beside {model.name} "
            f"({', '.join(missing)}); the 'lifespanstrip' mask source is unavailable")
    return model, template


def lifespanstrip_available(models_dir=None) -> bool:
    """Whether the LifespanStrip weights and their template can be found."""
    try:
        find_lifespanstrip(models_dir)
    except SourceUnavailable:
        return False
    return True


@functools.lru_cache(maxsize=4)
def _landmarks(path: str, mtime: float) -> dict:
    from ..preproc.intensity import compute_landmarks

    try:
        data = np.asarray(nib.load(path).get_fdata(dtype=np.float32))
    except (OSError, ValueError, EOFError, nib.filebasedimages.ImageFileError) as exc:
        raise SourceUnavailable(
            f"{path}: LifespanStrip template unreadable ({type(exc).__name__}: {exc})") from None
    if data.size == 0 or not np.all(np.isfinite(data)) or not np.any(data):
        raise SourceUnavailable(f"{path}: LifespanStrip template is empty or not finite")
    return compute_landmarks(data)


def template_landmarks(template) -> dict:
    """Histogram landmarks of the LifespanStrip template (cached per file version)."""
    path = Path(template)
    return _landmarks(str(path), path.stat().st_mtime)


def preprocess(img, landmarks: dict, *, n4: bool = True,
               num_threads: int | None = None) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Network-S input for ``img`` (spec 8.3 steps 1-6).

    Returns
    -------
    volume, lps_img
        float32 network-order volume on the 1.6 mm centred grid, and the LPS-reoriented
        full-resolution image (the grid the mask is first made on).
    """
    from ..image.orientation import reorient_to_lps, to_network_order
    from ..image.resample import new_image, resample_centered
    from ..preproc.intensity import match_histogram, window_intensities
    from ..preproc.n4 import n4_bias_correct

    lps = reorient_to_lps(img)
    windowed = new_image(window_intensities(np.asanyarray(lps.dataobj)), lps.affine, lps)
    if n4:
        windowed = n4_bias_correct(windowed, num_threads=num_threads)
    low = resample_centered(windowed, STRIP_SPACING_MM, order=1)
    matched = match_histogram(np.asanyarray(low.dataobj, dtype=np.float32), landmarks)
    volume = to_network_order(matched / np.float32(STRIP_SCALE)).astype(np.float32)
    LOGGER.debug("LifespanStrip input %s (network order) from %s", volume.shape, lps.shape)
    return volume, lps


def brain_probability(probs: np.ndarray) -> np.ndarray:
    """Brain probability (network order) = sum of the brain channels of network S."""
    probs = np.asarray(probs)
    if probs.ndim != 4 or probs.shape[0] != 4:
        raise ValueError(f"expected 4-channel probabilities, got shape {probs.shape}")
    return probs[list(BRAIN_CHANNELS)].sum(axis=0)


def upsample(prob_lps: np.ndarray, shape) -> np.ndarray:
    """Trilinear upsampling with ``align_corners=True`` (corner voxels map to corners)."""
    import torch
    from torch.nn import functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(prob_lps, dtype=np.float32))[None, None]
    out = F.interpolate(tensor, size=tuple(int(n) for n in shape), mode="trilinear",
                        align_corners=True)
    return out[0, 0].numpy()


def postprocess(prob_lps: np.ndarray, shape) -> np.ndarray:
    """Binary brain mask on the full-resolution LPS grid (spec 8.3 steps 9-10)."""
    brain = upsample(prob_lps, shape)
    mask = brain > (1.0 - brain)  # argmax over (background, brain), ties -> background
    if not mask.any():
        return mask
    box = bounding_box(mask, margin=OPENING_RADIUS + 1)
    ball = _ball(OPENING_RADIUS)
    opened = np.zeros_like(mask)
    opened[box] = ndimage.binary_opening(mask[box], structure=ball)
    return fill_small_holes(largest_component(opened), max_size=1)


def _ball(radius: int) -> np.ndarray:
    grid = np.ogrid[tuple(slice(-radius, radius + 1) for _ in range(3))]
    return sum(g**2 for g in grid) <= radius**2


def lifespanstrip_mask(img, *, models_dir=None, device: str = "cpu", precision: str = "auto",
                       num_threads: int | None = None, n4: bool = True,
                       progress: bool = False) -> nib.Nifti1Image:
    """LifespanStrip brain mask of ``img`` on its own grid (uint8).

    Raises
    ------
    SourceUnavailable
        When ``T1T2w-model.pt`` or its template cannot be found or read.
    """
    from ..image.orientation import from_network_order, restore_orientation
    from ..models.checkpoints import load_network
    from ..models.inference import skullstrip_volume

    model, template = find_lifespanstrip(models_dir)
    landmarks = template_landmarks(template)
    network = load_network(model, "skullstrip")
    volume, lps = preprocess(img, landmarks, n4=n4, num_threads=num_threads)
    probs = skullstrip_volume(volume, network, device=device, precision=precision,
                              num_threads=num_threads, progress=progress)
    mask = postprocess(from_network_order(brain_probability(probs)), lps.shape[:3])
    if not mask.any():
        raise BrainMaskError(f"{model}: LifespanStrip found no brain in the image")
    LOGGER.info("LifespanStrip mask: %d voxels (%s)", int(mask.sum()), model)
    return restore_orientation(mask_image(mask, lps), img, dtype=np.uint8)
