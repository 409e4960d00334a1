"""The ``template`` source: nilearn's MNI152 brain mask registered to a full head
(see :mod:`bmex_wf.brainmask.choose` for the method).
"""

from __future__ import annotations

import functools
import logging

import nibabel as nib
import numpy as np
from scipy import ndimage

from bmex_wf.brainmask.common import _data3d, _name, _zooms, mask_image
from bmex_wf.brainmask.errors import BrainMaskError
from bmex_wf.image.morphology import bounding_box, clean_mask

LOGGER = logging.getLogger(__name__)


#: Resolution (mm) of the template and of the image during registration.
REGISTRATION_SPACING_MM = 2


_SHRINK = (2, 1)


_SMOOTH_MM = (2.0, 1.0)


#: Margin (mm) around the template brain where the registration metric is sampled.
METRIC_MARGIN_MM = 18


#: Share of the metric-mask voxels sampled per iteration.
SAMPLING = 0.1


#: Shells of the head model wrapped around the MNI152 brain (adult values, mm).
TEMPLATE_SHELLS_MM = {"gap_mm": 3.0, "skull_mm": 6.0, "scalp_mm": 6.0, "wobble_mm": 0.0,
                      "noise": 0.0}


@functools.lru_cache(maxsize=1)
def _template_head():
    """Head model of nilearn's MNI152 2009a T1 at 2 mm: ``(head, brain, metric_mask)``.

    nilearn ships the template skull-stripped, so a CSF gap, a skull and a scalp
    shell are wrapped around it (:func:`~bmex_wf.brainmask.synthetic_head.synthetic_head`)
    to give the registration the contrasts of a full head.
    """
    import SimpleITK as sitk
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    from bmex_wf.brainmask.synthetic_head import synthetic_head
    from bmex_wf.image.resample import to_sitk

    template = load_mni152_template(resolution=REGISTRATION_SPACING_MM)
    brain = np.asanyarray(load_mni152_brain_mask(resolution=REGISTRATION_SPACING_MM).dataobj) > 0
    data = template.get_fdata(dtype=np.float32) * brain
    head, truth = synthetic_head(nib.Nifti1Image(data, template.affine), **TEMPLATE_SHELLS_MM)
    truth_data = np.asanyarray(truth.dataobj) > 0
    margin = ndimage.distance_transform_edt(~truth_data, sampling=_zooms(truth)) <= METRIC_MARGIN_MM
    as_sitk = [to_sitk(nib.Nifti1Image(np.asarray(a, dtype=t), head.affine))
               for a, t in ((head.get_fdata(dtype=np.float32), np.float32),
                            (truth_data, np.float32), (margin, np.uint8))]
    return as_sitk[0], as_sitk[1], sitk.Cast(as_sitk[2], sitk.sitkUInt8)


def _registration_image(img):
    """The image, clipped at its 99.5th percentile, smoothed and resampled to 2 mm."""
    import SimpleITK as sitk

    from bmex_wf.image.resample import to_sitk

    data = np.nan_to_num(np.asarray(_data3d(img), dtype=np.float32))
    top = float(np.percentile(data[data > 0], 99.5)) if np.any(data > 0) else 1.0
    image = to_sitk(nib.Nifti1Image(np.clip(data, 0, top), img.affine))
    spacing = np.asarray(image.GetSpacing())
    new_spacing = np.maximum(spacing, REGISTRATION_SPACING_MM)
    sigmas = np.sqrt(np.maximum(new_spacing**2 - spacing**2, 0)) / 2.355
    if np.any(sigmas > 0):
        image = sitk.SmoothingRecursiveGaussian(image, [float(s) or 1e-3 for s in sigmas])
    size = [max(round(n * s / t), 8) for n, s, t in zip(image.GetSize(), spacing, new_spacing)]
    return sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(),
                         new_spacing.tolist(), image.GetDirection(), 0.0, sitk.sitkFloat32)


def _register(fixed, moving, fixed_mask, transform, *, seed: int, iterations: int):
    import SimpleITK as sitk

    if seed < 1:
        raise ValueError(f"registration seed must be a positive integer, got {seed}")
    reg = sitk.ImageRegistrationMethod()
    reg.SetNumberOfThreads(sitk.ProcessObject.GetGlobalDefaultNumberOfThreads())
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.REGULAR)
    reg.SetMetricSamplingPercentage(SAMPLING, seed)  # seed 0 would mean the wall clock
    reg.SetMetricFixedMask(fixed_mask)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=iterations,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-6)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel(list(_SHRINK))
    reg.SetSmoothingSigmasPerLevel(list(_SMOOTH_MM))
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetInitialTransform(transform, inPlace=True)
    reg.Execute(fixed, moving)
    LOGGER.debug("%s registration: metric %.4f after %d iterations (%s)",
                 transform.GetName(), reg.GetMetricValue(), reg.GetOptimizerIteration(),
                 reg.GetOptimizerStopConditionDescription())
    return transform


def _head_foreground(image):
    """Otsu foreground of a SimpleITK image with its holes filled (the head)."""
    import SimpleITK as sitk

    return sitk.BinaryFillhole(sitk.OtsuThreshold(image, 0, 1))


def _volume(mask) -> float:
    import SimpleITK as sitk

    return float(sitk.GetArrayViewFromImage(mask).sum()) * float(np.prod(mask.GetSpacing()))


def register_template(img, *, affine: bool = False, seed: int = 1,
                      num_threads: int | None = None):
    """Similarity (or affine) SimpleITK transform from template points to ``img``'s points.

    The template head model is the fixed image (the metric is sampled within
    ``METRIC_MARGIN_MM`` of its brain), the image the moving one; centre-of-mass
    start with the isotropic scale of the head volumes, then a similarity stage (rigid +
    isotropic scale) and, with ``affine``, an affine stage, each at 4 and 2 mm.
    """
    import SimpleITK as sitk

    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    if num_threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(num_threads))
    try:
        fixed, _, metric_mask = _template_head()
        moving = _registration_image(img)
        fixed_head, moving_head = _head_foreground(fixed), _head_foreground(moving)
        transform = sitk.CenteredTransformInitializer(
            fixed_head, moving_head, sitk.Similarity3DTransform(),
            sitk.CenteredTransformInitializerFilter.MOMENTS)
        transform.SetScale((_volume(moving_head) / _volume(fixed_head)) ** (1.0 / 3.0))
        transform = _register(fixed, moving, metric_mask, transform, seed=seed, iterations=80)
        if affine:
            similarity = transform
            transform = sitk.AffineTransform(3)
            transform.SetCenter(similarity.GetCenter())
            transform.SetMatrix(similarity.GetMatrix())
            transform.SetTranslation(similarity.GetTranslation())
            transform = _register(fixed, moving, metric_mask, transform, seed=seed, iterations=60)
        return transform
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)


def template_mask(img, *, refine: bool = True, seed: int = 1,
                  num_threads: int | None = None) -> nib.Nifti1Image:
    """Brain mask of a full-head image from the registered MNI152 template.

    The template's brain mask is carried onto the image grid (linear, threshold at
    0.5) through the affine found by :func:`register_template`; with ``refine`` the
    result is cleaned by intensity (:func:`refine_mask`).
    """
    import SimpleITK as sitk

    from bmex_wf.image.resample import sitk_geometry

    transform = register_template(img, seed=seed, num_threads=num_threads).GetInverse()
    _, brain, _ = _template_head()
    origin, spacing, direction = sitk_geometry(img.affine)
    shape = _data3d(img).shape
    warped = sitk.Resample(brain, list(shape), transform,
                           sitk.sitkLinear, origin, spacing, direction, 0.0, sitk.sitkFloat32)
    mask = sitk.GetArrayFromImage(warped).T >= 0.5
    if not mask.any():
        raise BrainMaskError(f"{_name(img)}: template registration failed (empty brain mask)")
    if refine:
        mask = refine_mask(_data3d(img), mask, _zooms(img))
    return mask_image(clean_mask(mask), img)


def refine_mask(data: np.ndarray, mask: np.ndarray, zooms, *, search_mm: float = 6.0,
                open_mm: float = 2.0, core_mm: float = 10.0) -> np.ndarray:
    """Intensity cleanup of a registered brain mask on a full head.

    Within ``search_mm`` of ``mask``, voxels darker than the Otsu threshold (CSF gap,
    skull, air) are dropped and an opening of ``open_mm`` cuts thin bridges; of the
    pieces left, the one that covers most of the mask's core (deeper than ``core_mm``)
    is the brain (a scalp shell caught by a too large mask lies outside the core);
    its holes are filled and its surface closed again. The mask is returned
    unchanged when the result would miss half of that core.
    """
    zooms = np.asarray(zooms, dtype=float)
    box = bounding_box(mask, margin=int(np.ceil(search_mm / zooms.min())) + 1)
    out = mask.copy()
    out[box] = _refine_box(np.asarray(data[box], dtype=np.float32), mask[box], zooms,
                           search_mm=search_mm, open_mm=open_mm, core_mm=core_mm)
    return out


def _refine_box(values: np.ndarray, mask: np.ndarray, zooms: np.ndarray, *, search_mm: float,
                open_mm: float, core_mm: float) -> np.ndarray:
    from skimage.filters import threshold_otsu

    region = ndimage.distance_transform_edt(~mask, sampling=zooms) <= search_mm
    threshold = threshold_otsu(values[region])
    radius = np.maximum(np.round(open_mm / zooms).astype(int), 1)
    ball = _ellipsoid(radius)
    pieces, count = ndimage.label(ndimage.binary_opening(region & (values > threshold),
                                                         structure=ball))
    core = ndimage.distance_transform_edt(mask, sampling=zooms) > core_mm
    core = core if core.any() else mask
    overlap = np.bincount(pieces[core], minlength=count + 1)
    overlap[0] = 0
    if not count or not overlap.any():
        LOGGER.warning("Intensity refinement found no brain in the template mask; keeping it")
        return mask
    refined = ndimage.binary_fill_holes(pieces == int(np.argmax(overlap)))
    refined = ndimage.binary_closing(refined, structure=ball, iterations=2) & region
    refined = ndimage.binary_fill_holes(refined)
    if np.count_nonzero(refined & core) < 0.5 * np.count_nonzero(core):
        LOGGER.warning("Intensity refinement lost most of the template mask's core; keeping it")
        return mask
    return refined


def _ellipsoid(radius) -> np.ndarray:
    """Boolean ellipsoid structuring element with per-axis ``radius`` (voxels)."""
    grids = np.ogrid[tuple(slice(-r, r + 1) for r in radius)]
    return sum((g / max(r, 1)) ** 2 for g, r in zip(grids, radius)) <= 1.0
