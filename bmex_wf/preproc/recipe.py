"""The one preprocessing recipe that turns an image into network E's input (spec 8.3/8.4).

Inference (the nodes of ``init_bmex_wf``) and training (:mod:`bmex_wf.training.data`)
call these step functions, in this order:

1. :func:`reorient` the image (and mask) to their closest LPS axes, exactly;
2. :func:`window` the intensities (0.001st-99.999th percentiles to 0-1000);
3. :func:`correct_bias` of the head (N4, fitted on the non-zero voxels);
4. the brain mask (given, or :func:`default_mask`: the non-zero voxels);
5. :func:`apply_mask` to the bias-corrected head;
6. :func:`correct_bias` of the masked brain (N4 within the mask);
7. :func:`to_network_grid`: linear resampling to the model's voxel size (nearest for the mask);
8. :func:`match_template`: histogram matching to the age template's stored landmarks.

Steps 3 and 6 are skipped when ``bias_correction`` is off. The result, in network axis
order, is what :func:`bmex_wf.models.inference.enhance_volume` receives.
"""

from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np


@dataclass
class NetworkInput:
    """Network E's input for one image.

    Attributes
    ----------
    data : ndarray
        float32 volume in network axis order, template units.
    mask : ndarray
        uint8 brain mask in network axis order.
    image : nibabel image
        ``data`` on the network grid (LPS array order) with its affine.
    landmarks : dict
        Reference and source landmarks of the histogram matching.
    """

    data: np.ndarray
    mask: np.ndarray
    image: nib.Nifti1Image
    landmarks: dict


def _like(data: np.ndarray, img) -> nib.Nifti1Image:
    from ..image.header import header_image

    return header_image(np.asarray(data), img.affine, img.header)


def reorient(img) -> nib.Nifti1Image:
    """Closest LPS axes, by exact permutation and flips (world geometry kept)."""
    from ..image.orientation import reorient_to_lps

    return reorient_to_lps(img)


def window(img, lower_pct: float = 0.001, upper_pct: float = 99.999,
           out_max: float = 1000.0) -> nib.Nifti1Image:
    """Intensities windowed linearly to ``0..out_max`` between two percentiles."""
    from .intensity import window_intensities

    data = window_intensities(np.asanyarray(img.dataobj), lower_pct, upper_pct, out_max)
    return _like(data, img)


def correct_bias(img, mask=None, num_threads: int | None = None, **n4_options) -> nib.Nifti1Image:
    """N4 bias-field correction (fitted within ``mask``, default: voxels > 0)."""
    from .n4 import n4_bias_correct

    out = n4_bias_correct(img, mask=mask, num_threads=num_threads, **n4_options)
    return _like(np.asanyarray(out.dataobj, dtype=np.float32), img)


def default_mask(img) -> nib.Nifti1Image:
    """The brain mask of a skull-stripped image: its non-zero voxels, cleaned."""
    from ..brainmask.nonzero import nonzero_mask

    return nonzero_mask(img)


def apply_mask(img, mask) -> nib.Nifti1Image:
    """``img`` with every voxel outside ``mask`` (a boolean array or image) set to 0."""
    inside = np.asanyarray(getattr(mask, "dataobj", mask)) > 0
    return _like(np.asanyarray(img.dataobj) * inside, img)


def to_network_grid(img, voxel_mm: float, order: int = 1) -> nib.Nifti1Image:
    """Resampled to isotropic ``voxel_mm`` voxels (the enhancement grid rule)."""
    from ..image.resample import resample_to_spacing

    return resample_to_spacing(img, voxel_mm, order=order)


def match_template(img, template: str, reference: dict | None = None, levels: int | None = None,
                   match_points: int | None = None) -> tuple[nib.Nifti1Image, dict]:
    """Histogram-matched to the stored landmarks of ``template``; returns (image, landmarks).

    ``reference`` (landmarks read elsewhere) replaces the stored ones, ``template`` then only
    names them; ``levels`` and ``match_points`` default to the release's settings.
    """
    from .intensity import HISTOGRAM_LEVELS, MATCH_POINTS, match_histogram, template_landmarks

    if reference is None:
        reference = template_landmarks(template)
    matched, source = match_histogram(np.asanyarray(img.dataobj), reference,
                                      HISTOGRAM_LEVELS if levels is None else levels,
                                      MATCH_POINTS if match_points is None else match_points,
                                      return_landmarks=True)
    return _like(matched, img), {"reference_name": template, "reference": reference, "source": source}


def network_input(img, template: str, voxel_mm: float, mask=None, bias_correction: bool = True,
                  num_threads: int | None = None) -> NetworkInput:
    """Run the whole recipe (module docstring) on one image.

    Parameters
    ----------
    img : nibabel image
        The T1w/T2w image (validated).
    template : str
        Age template name, e.g. ``Template-Month24-T1w``.
    voxel_mm : float
        Network voxel size of the model (``models.json``).
    mask : nibabel image, optional
        Brain mask on the image's grid; default: the non-zero voxels of the windowed head.
    bias_correction : bool
        Run both N4 passes.
    num_threads : int, optional
        Threads for N4.
    """
    from ..image.orientation import to_network_order

    head = window(reorient(img))
    if bias_correction:
        head = correct_bias(head, num_threads=num_threads)
    brain_mask = default_mask(head) if mask is None else reorient(mask)
    inside = np.asanyarray(brain_mask.dataobj) > 0
    brain = apply_mask(head, inside)
    if bias_correction:
        brain = correct_bias(brain, mask=inside, num_threads=num_threads)
    grid = to_network_grid(brain, voxel_mm, order=1)
    grid_mask = to_network_grid(_like(inside.astype(np.uint8), brain_mask), voxel_mm, order=0)
    matched, landmarks = match_template(grid, template)
    data = np.asanyarray(matched.dataobj, dtype=np.float32)
    return NetworkInput(data=to_network_order(data).astype(np.float32),
                        mask=(to_network_order(np.asanyarray(grid_mask.dataobj)) > 0).astype(np.uint8),
                        image=matched, landmarks=landmarks)
