"""Brain masks from several sources, and the ``auto`` choice between them.

Sources
-------
``lifespanstrip``
    Network S with the official ``T1T2w-model.pt`` and its intensity template
    (spec 8.3; see :mod:`bmex_wf.utils.lifespanstrip`).
``precomputed``
    A user mask on any grid, resampled (nearest neighbour) onto the image grid.
``nonzero``
    For images that are already skull-stripped (background exactly 0): the
    non-zero voxels, holes filled, largest component kept.
``template``
    Offline fallback for full heads without LifespanStrip weights. nilearn bundles
    only a skull-stripped MNI152 (ICBM 2009a) T1 template and its brain mask (no
    head template), so a head model is made from them: the template brain wrapped
    in a dark CSF gap, a dark skull and a bright scalp shell
    (:func:`~bmex_wf.utils.synthetic.synthetic_head`, adult thicknesses). It is
    registered to the image with SimpleITK at 2 mm (Mattes mutual information
    sampled within ``METRIC_MARGIN_MM`` of the template brain; start: centres of
    mass of the Otsu head foregrounds and the cube root of their volume ratio as
    scale; a similarity stage, rigid + isotropic scale, at 4 then 2 mm; an affine
    stage on request), its brain mask is carried onto the image grid (linear,
    threshold 0.5), and refined by intensity (:func:`refine_mask`).
``auto``
    ``precomputed`` when a mask is given; otherwise ``nonzero`` for skull-stripped
    images, ``lifespanstrip`` when its weights and template are available, and
    ``template`` otherwise.

Every function returns masks on the input image's own grid (any orientation).
"""

from __future__ import annotations

import functools
import logging
import os

import nibabel as nib
import numpy as np
from scipy import ndimage

LOGGER = logging.getLogger(__name__)

#: Mask sources, ``auto`` first.
SOURCES = ("auto", "lifespanstrip", "precomputed", "nonzero", "template")


class BrainMaskError(ValueError):
    """A brain mask cannot be made or read (message names the file and the problem)."""


class SourceUnavailable(BrainMaskError):
    """A mask source cannot run here (missing weights, template or input mask)."""


# --------------------------------------------------------------------------- helpers
def _data3d(img) -> np.ndarray:
    data = np.asanyarray(img.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    return data


def _zooms(img) -> np.ndarray:
    return np.asarray(img.header.get_zooms()[:3], dtype=float)


def _name(img) -> str:
    filename = img.get_filename() if hasattr(img, "get_filename") else None
    return str(filename) if filename else "image"


def mask_image(mask: np.ndarray, reference) -> nib.Nifti1Image:
    """A uint8 NIfTI mask with ``reference``'s affine, header fields and q/s-form codes."""
    from .validation import header_image

    return header_image(np.asarray(mask, dtype=np.uint8), reference.affine, reference.header)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest face-connected component of ``mask`` (empty stays empty)."""
    labels, count = ndimage.label(mask)
    if count <= 1:
        return labels > 0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes))


def fill_small_holes(mask: np.ndarray, max_size: int = 1) -> np.ndarray:
    """Fill enclosed background components of at most ``max_size`` voxels."""
    holes = ndimage.binary_fill_holes(mask) & ~mask
    labels, count = ndimage.label(holes)
    if not count:
        return mask.copy()
    sizes = np.bincount(labels.ravel())
    small = np.flatnonzero(sizes <= max_size)
    return mask | (np.isin(labels, small[small > 0]))


def bounding_box(mask: np.ndarray, margin: int = 1) -> tuple[slice, ...]:
    """Slices of the bounding box of ``mask`` grown by ``margin`` voxels (clipped)."""
    coords = np.nonzero(mask)
    if not coords[0].size:
        return tuple(slice(0, n) for n in mask.shape)
    return tuple(
        slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n))
        for c, n in zip(coords, mask.shape)
    )


def clean_mask(mask: np.ndarray) -> np.ndarray:
    """Largest face-connected component of ``mask`` with every enclosed hole filled."""
    mask = np.asarray(mask, dtype=bool)
    box = bounding_box(mask)
    out = np.zeros(mask.shape, dtype=bool)
    out[box] = ndimage.binary_fill_holes(largest_component(mask[box]))
    return out


# --------------------------------------------------------------------------- nonzero
def nonzero_mask(img) -> nib.Nifti1Image:
    """Mask of a skull-stripped image: its non-zero voxels, cleaned."""
    data = _data3d(img)
    mask = clean_mask(np.isfinite(data) & (data != 0))
    if not mask.any():
        raise BrainMaskError(f"{_name(img)}: no non-zero voxel; cannot make a 'nonzero' mask")
    return mask_image(mask, img)


def _border_faces(array: np.ndarray):
    for axis in range(array.ndim):
        for index in (0, -1):
            yield np.take(array, index, axis=axis)


def skull_stripped_evidence(img) -> dict:
    """Measurements that tell a skull-stripped image from a full head.

    Returns a dict with ``zero_fraction`` (exact zeros among all voxels),
    ``border_zero_fraction`` (exact zeros among the voxels of the 6 array faces),
    ``faces_touched`` (faces holding any non-zero voxel), ``outer_zero_fraction``
    (share of the zeros that form background connected to the array border) and
    ``rim_ratio`` (median intensity of the outer 3 mm of the non-zero region over the
    median of the next 3-15 mm: a bright scalp over a dark skull gives < 0.5 ... > 2;
    a brain's cortex over white matter stays near 1).
    """
    data = _data3d(img)
    zero = ~np.isfinite(data) | (data == 0)
    faces = list(_border_faces(zero))
    border = np.concatenate([f.ravel() for f in faces])
    evidence = {
        "zero_fraction": float(zero.mean()),
        "border_zero_fraction": float(border.mean()),
        "faces_touched": int(sum(not f.all() for f in faces)),
    }
    labels, _ = ndimage.label(zero)
    edge_labels = np.unique(np.concatenate([np.ravel(f) for f in _border_faces(labels)]))
    edge_labels = edge_labels[edge_labels > 0]
    outer = np.isin(labels, edge_labels)
    evidence["outer_zero_fraction"] = float(outer.sum() / max(int(zero.sum()), 1))
    evidence["rim_ratio"] = _rim_ratio(data, ~outer, _zooms(img))
    return evidence


def _rim_ratio(data: np.ndarray, body: np.ndarray, zooms: np.ndarray) -> float:
    """Median of the outer 3 mm of ``body`` over the median of its 3-15 mm layer."""
    if not body.any():
        return float("nan")
    coords = np.nonzero(body)
    box = tuple(slice(max(int(c.min()) - 1, 0), int(c.max()) + 2) for c in coords)
    depth = ndimage.distance_transform_edt(body[box], sampling=zooms)
    values = data[box].astype(np.float32)
    rim = values[(depth > 0) & (depth <= 3.0)]
    inner = values[(depth > 3.0) & (depth <= 15.0)]
    if rim.size == 0 or inner.size == 0:
        return float("nan")
    inner_median = float(np.median(inner))
    return float(np.median(rim)) / inner_median if inner_median > 0 else float("inf")


def looks_skull_stripped(img, evidence: dict | None = None) -> bool:
    """Whether ``img`` looks already skull-stripped (exact-zero background around a brain).

    True when at least 30 % of the voxels are exactly 0, at least 90 % of the
    array-face voxels are 0, the non-zero region touches at most 2 of the 6 faces,
    the zeros are mostly (>= 90 %) one background connected to the border, and the
    outer layer of the non-zero region is not a bright rim over a dark shell
    (``rim_ratio`` below 2, i.e. no scalp over skull).
    """
    ev = evidence or skull_stripped_evidence(img)
    stripped = (
        ev["zero_fraction"] >= 0.30
        and ev["border_zero_fraction"] >= 0.90
        and ev["faces_touched"] <= 2
        and ev["outer_zero_fraction"] >= 0.90
        and not ev["rim_ratio"] >= 2.0
    )
    LOGGER.debug("Skull-stripped evidence for %s: %s -> %s", _name(img), ev, stripped)
    return bool(stripped)


# --------------------------------------------------------------------------- precomputed
def precomputed_mask(mask_file, img) -> nib.Nifti1Image:
    """A user mask file (any grid) binarized and resampled onto ``img``'s grid (nearest).

    Raises :class:`~bmex_wf.utils.validation.ImageError` (a ``ValueError``) naming the
    file for unreadable, non-mask-like or empty masks and masks outside the image.
    """
    from .validation import validate_mask

    if not mask_file or not os.path.isfile(mask_file):
        raise SourceUnavailable(f"{mask_file}: mask file not found (source 'precomputed')")
    out = validate_mask(mask_file, img)
    return mask_image(np.asanyarray(out.dataobj) > 0, img)


# --------------------------------------------------------------------------- template
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
    shell are wrapped around it (:func:`~bmex_wf.utils.synthetic.synthetic_head`)
    to give the registration the contrasts of a full head.
    """
    import SimpleITK as sitk
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    from .resample import to_sitk
    from .synthetic import synthetic_head

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

    from .resample import to_sitk

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

    from .resample import sitk_geometry

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


# --------------------------------------------------------------------------- choice
def choose_source(img, *, in_mask=None, models_dir=None) -> tuple[str, str]:
    """The source ``auto`` picks for ``img``, and why.

    ``precomputed`` when ``in_mask`` is given; ``nonzero`` when the image looks
    skull-stripped; ``lifespanstrip`` when its weights and template are found;
    ``template`` otherwise.
    """
    from .lifespanstrip import lifespanstrip_available

    if in_mask:
        return "precomputed", f"a mask was given ({in_mask})"
    evidence = skull_stripped_evidence(img)
    if looks_skull_stripped(img, evidence):
        return "nonzero", (f"the image looks skull-stripped ({evidence['zero_fraction']:.0%} "
                           "exact zeros forming the background)")
    if lifespanstrip_available(models_dir):
        return "lifespanstrip", "full-head image and LifespanStrip weights found"
    return "template", "full-head image and no LifespanStrip weights (T1T2w-model.pt + template)"


def compute_brain_mask(img, source: str = "auto", *, in_mask=None, models_dir=None,
                       device: str = "cpu", num_threads: int | None = None
                       ) -> tuple[nib.Nifti1Image, str]:
    """Brain mask of ``img`` on its own grid, and the source that made it.

    Parameters
    ----------
    img : nibabel image
        3-D image, any orientation.
    source : str
        One of :data:`SOURCES`.
    in_mask : path-like, optional
        User mask (needed by ``precomputed``; makes ``auto`` pick it).
    models_dir : path-like, optional
        First folder searched for ``T1T2w-model.pt`` and its template.
    device : str
        Torch device for LifespanStrip (``"cpu"``, ``"cuda"``, ``"auto"``).
    num_threads : int, optional
        CPU threads for SimpleITK and torch.

    Returns
    -------
    mask_img, source_used
        uint8 mask (0/1) on ``img``'s grid, and the source that produced it.
    """
    if source not in SOURCES:
        raise BrainMaskError(f"unknown mask source {source!r}; expected one of {', '.join(SOURCES)}")
    if source == "auto":
        source, reason = choose_source(img, in_mask=in_mask, models_dir=models_dir)
        LOGGER.info("Brain mask source for %s: %s (%s)", _name(img), source, reason)
    if source == "precomputed":
        if not in_mask:
            raise SourceUnavailable("mask source 'precomputed' needs an input mask (in_mask)")
        mask = precomputed_mask(in_mask, img)
    elif source == "nonzero":
        mask = nonzero_mask(img)
    elif source == "lifespanstrip":
        from .lifespanstrip import lifespanstrip_mask

        mask = lifespanstrip_mask(img, models_dir=models_dir, device=device,
                                  num_threads=num_threads)
    else:
        mask = template_mask(img, num_threads=num_threads)
    LOGGER.info("Brain mask (%s): %d voxels", source, int(np.count_nonzero(mask.dataobj)))
    return mask, source
