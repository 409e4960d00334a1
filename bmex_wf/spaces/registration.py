"""Registration of a brain to a template with ANTs (antspyx): rigid, affine, SyN.

``antsRegistration`` runs through antspyx's full interface with explicit stages, as the
NiPreps registration settings do: a centre-of-mass initialisation, then rigid and affine
stages (mutual information) and, for ``SyN``, a symmetric diffeomorphic stage
(cross-correlation). Transforms are written as ITK composite HDF5 files, forward
(``moving -> fixed``, for antsApplyTransforms on moving-space images) and inverse; ANTs and
nitransforms read both.

Registration may run on coarser copies of both images (``spacing_mm``): transforms live in
physical space, so they apply unchanged to the full-resolution images.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from ..execution.orphans import die_with_parent_code

LOGGER = logging.getLogger("bmex_wf.registration")

TRANSFORMS = ("Rigid", "Affine", "SyN")
INTERPOLATIONS = ("linear", "nearestNeighbor", "genericLabel", "bSpline")

#: (iterations, shrink factors, smoothing sigmas) of the linear and SyN stages per preset.
SCHEDULES = {
    "default": {"linear": ("1000x500x250x100", "8x4x2x1", "3x2x1x0vox"),
                "syn": ("100x70x50x20", "8x4x2x1", "3x2x1x0vox"), "radius": 4},
    "quick": {"linear": ("200x100x50", "4x2x1", "2x1x0vox"),
              "syn": ("40x20x10", "4x2x1", "2x1x0vox"), "radius": 2},
}


class RegistrationError(ValueError):
    """Registration inputs that cannot be used, or a failed ``antsRegistration``."""


@dataclass
class RegistrationResult:
    """Outcome of :func:`register_to_template`.

    Attributes
    ----------
    warped : nibabel.Nifti1Image
        The moving image resampled into the fixed (template) grid.
    forward_transforms : list of Path
        ``moving -> fixed`` transforms in ANTs order (for moving-space images).
    inverse_transforms : list of Path
        ``fixed -> moving`` transforms in ANTs order (for fixed-space images).
    """

    warped: nib.Nifti1Image
    forward_transforms: list[Path]
    inverse_transforms: list[Path]


@contextmanager
def itk_threads(num_threads: int):
    """Set ``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` for the duration of the block.

    ITK reads the variable once per process, at its first multi-threaded filter: it takes
    effect in fresh processes (Nipype's MultiProc workers, ``maxtasksperchild=1``), not after
    another ITK call in the same process.
    """
    key = "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"
    old = os.environ.get(key)
    os.environ[key] = str(max(1, int(num_threads)))
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def _write(img: nib.spatialimages.SpatialImage, path: Path) -> str:
    """Write ``img`` as an uncompressed float32 NIfTI for ANTs."""
    data = np.nan_to_num(np.asanyarray(img.dataobj).astype(np.float32))
    out = nib.Nifti1Image(data, img.affine, img.header)
    out.set_data_dtype(data.dtype)
    out.header.set_slope_inter(1, 0)
    out.to_filename(path)
    return str(path)


def _masked(img: nib.Nifti1Image, mask: nib.Nifti1Image | None) -> nib.Nifti1Image:
    """``img`` with voxels outside ``mask`` (same grid) set to zero."""
    if mask is None:
        return img
    if mask.shape[:3] != img.shape[:3] or not np.allclose(mask.affine, img.affine, atol=1e-3):
        raise RegistrationError(f"{mask.get_filename() or 'mask'}: not on the grid of "
                                f"{img.get_filename() or 'its image'}")
    data = np.asanyarray(img.dataobj).astype(np.float32)
    return nib.Nifti1Image(np.where(np.asanyarray(mask.dataobj) > 0, data, 0), img.affine,
                           img.header)


def _resampled(path: str, spacing_mm: float | None) -> str:
    """``path``, or a copy resampled (linear) to ``spacing_mm`` isotropic voxels."""
    if not spacing_mm:
        return path
    import ants

    img = ants.image_read(path)
    coarse = ants.resample_image(img, (spacing_mm,) * 3, use_voxels=False, interp_type=0)
    out = path.replace(".nii", f"_{spacing_mm:g}mm.nii")
    ants.image_write(coarse, out)
    return out


def _stage(kind: str, fixed: str, moving: str, schedule: dict, syn_metric: str) -> list[str]:
    if kind == "SyN":
        its, shrink, sigmas = schedule["syn"]
        metric = (f"CC[{fixed},{moving},1,{schedule['radius']}]" if syn_metric == "CC"
                  else f"MI[{fixed},{moving},1,32]")
        transform = "SyN[0.1,3,0]"
    else:
        its, shrink, sigmas = schedule["linear"]
        metric = f"MI[{fixed},{moving},1,32,Regular,0.25]"
        transform = f"{kind}[0.1]"
    return ["--transform", transform, "--metric", metric, "--convergence", f"[{its},1e-6,10]",
            "--shrink-factors", shrink, "--smoothing-sigmas", sigmas]


def registration_args(fixed: str, moving: str, prefix: str, *, transform: str,
                      iterations: str, seed: int, syn_metric: str = "CC") -> list[str]:
    """``antsRegistration`` arguments (images given by path, already brain-extracted).

    No metric masks: on brain-extracted images they only made things worse (sub-0002 to the
    MNI152 2009a template at 2 mm, quick SyN: brain-mask Dice 0.72 with masks in the SyN stage,
    0.96 without). ``syn_metric`` ``"MI"`` replaces cross-correlation in the SyN stage (images
    of different contrasts).
    """
    if transform not in TRANSFORMS:
        raise RegistrationError(f"unknown transform {transform!r}; expected one of {TRANSFORMS}")
    if iterations not in SCHEDULES:
        raise RegistrationError(f"unknown iterations preset {iterations!r}; expected one of "
                                f"{tuple(SCHEDULES)}")
    if syn_metric not in ("CC", "MI"):
        raise RegistrationError(f"unknown SyN metric {syn_metric!r}; expected 'CC' or 'MI'")
    args = ["--dimensionality", "3", "--float", "1", "--collapse-output-transforms", "1",
            "--write-composite-transform", "1", "--output", prefix,
            "--interpolation", "Linear", "--use-histogram-matching", "0",
            "--winsorize-image-intensities", "[0.005,0.995]",
            "--initial-moving-transform", f"[{fixed},{moving},1]"]
    stages = {"Rigid": ["Rigid"], "Affine": ["Rigid", "Affine"],
              "SyN": ["Rigid", "Affine", "SyN"]}[transform]
    for kind in stages:
        args += _stage(kind, fixed, moving, SCHEDULES[iterations], syn_metric)
    return args + ["--random-seed", str(int(seed))]


_REGISTRATION_CHILD = "import json, sys, ants; ants.registration(json.loads(sys.argv[1]), None)"


def _run_registration(args: list[str], num_threads: int, *, what: str) -> None:
    """Run ``antsRegistration`` in a child Python process with ``num_threads`` ITK threads.

    ITK fixes its thread count at the first multi-threaded filter of a process, so a setting
    made afterwards in the same process is ignored, and with several threads a seeded run is
    not repeatable (two runs of the same rigid registration differed by 2 mm). A fresh process
    makes the setting hold wherever this is called from (a Linear-plugin node, a notebook).
    The child dies with this process (Linux): a killed run leaves no registration running.
    """
    code = die_with_parent_code() + _REGISTRATION_CHILD  # killed with this process (Linux)
    with itk_threads(num_threads):  # the child reads the setting at its first ITK filter
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(args)],
                              capture_output=True, text=True, check=False)
    if proc.returncode:
        lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        raise RegistrationError(f"antsRegistration failed ({what}): "
                                f"{lines[-1] if lines else f'exit code {proc.returncode}'}")


def register_to_template(moving: nib.Nifti1Image, fixed: nib.Nifti1Image, *, out_dir: Path,
                         moving_mask: nib.Nifti1Image | None = None,
                         fixed_mask: nib.Nifti1Image | None = None, transform: str = "SyN",
                         spacing_mm: float | None = None, iterations: str = "default",
                         seed: int = 0, num_threads: int = 1,
                         syn_metric: str = "CC") -> RegistrationResult:
    """Register ``moving`` (a brain) to ``fixed`` (a template brain) with antsRegistration.

    Parameters
    ----------
    moving, fixed : nibabel.Nifti1Image
        Moving image and the fixed (template) image.
    out_dir : Path
        Folder of the transform files (``reg_Composite.h5``, ``reg_InverseComposite.h5``).
    moving_mask, fixed_mask : nibabel.Nifti1Image, optional
        Brain masks on the grids of their images, which are brain-extracted with them.
    transform : str
        ``Rigid``, ``Affine`` (rigid then affine) or ``SyN`` (rigid, affine, SyN).
    spacing_mm : float, optional
        Register copies of both images resampled to this isotropic voxel size.
    iterations : str
        ``default`` or ``quick`` (fewer iterations and levels, for tests and benchmarks).
    seed : int
        Random seed of the metric sampling (with one thread, runs are repeatable).
    num_threads : int
        ITK threads.
    syn_metric : str
        ``CC`` (same contrast) or ``MI`` (different contrasts) in the SyN stage.

    Returns
    -------
    RegistrationResult
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if spacing_mm is not None and not spacing_mm > 0:
        raise RegistrationError(f"spacing_mm must be positive, got {spacing_mm}")
    prefix = str(out_dir / "reg_")
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".reg") as tmp, \
            itk_threads(num_threads):
        tmp = Path(tmp)
        files = {"fixed": _write(_masked(fixed, fixed_mask), tmp / "fixed.nii"),
                 "moving": _write(_masked(moving, moving_mask), tmp / "moving.nii")}
        files = {name: _resampled(path, spacing_mm) for name, path in files.items()}
        args = registration_args(files["fixed"], files["moving"], prefix, transform=transform,
                                 iterations=iterations, seed=seed, syn_metric=syn_metric)
        LOGGER.debug("antsRegistration %s", " ".join(args))
        _run_registration(args, num_threads, what=f"{transform}, {iterations}")
    forward, inverse = Path(prefix + "Composite.h5"), Path(prefix + "InverseComposite.h5")
    for path in (forward, inverse):
        if not path.is_file():
            raise RegistrationError(f"antsRegistration wrote no {path.name} in {out_dir}")
    warped = apply_transforms(moving, fixed, [forward], num_threads=num_threads)
    return RegistrationResult(warped=warped, forward_transforms=[forward],
                              inverse_transforms=[inverse])


def apply_transforms(image: nib.Nifti1Image, reference: nib.Nifti1Image, transforms: list[Path],
                     *, interpolation: str = "linear",
                     num_threads: int = 1) -> nib.Nifti1Image:
    """Resample ``image`` onto ``reference``'s grid through ``transforms`` (ANTs order).

    Parameters
    ----------
    image : nibabel.Nifti1Image
        Image to resample (3D).
    reference : nibabel.Nifti1Image
        Image defining the output grid.
    transforms : list of Path
        Transform files, last applied first (as antsApplyTransforms takes them).
    interpolation : str
        ``linear``, ``nearestNeighbor`` or ``genericLabel`` (labels), ``bSpline``.

    Returns
    -------
    nibabel.Nifti1Image
        On the reference grid and header; labels keep the input's integer type.
    """
    import ants

    if interpolation not in INTERPOLATIONS:
        raise RegistrationError(f"unknown interpolation {interpolation!r}; expected one of "
                                f"{INTERPOLATIONS}")
    missing = [str(p) for p in transforms if not Path(p).is_file()]
    if missing:
        raise RegistrationError(f"transform file not found: {', '.join(missing)}")
    labels = interpolation in ("nearestNeighbor", "genericLabel")
    with tempfile.TemporaryDirectory(prefix="bmex_apply") as tmp, itk_threads(num_threads):
        moving = ants.image_read(_write(image, Path(tmp) / "image.nii"))
        fixed = ants.image_read(_write(reference, Path(tmp) / "reference.nii"))
        out = ants.apply_transforms(fixed=fixed, moving=moving,
                                    transformlist=[str(p) for p in transforms],
                                    interpolator=interpolation)
        data = out.numpy()
    dtype = np.asanyarray(image.dataobj).dtype if labels else np.float32
    data = np.rint(data).astype(dtype) if labels else data.astype(np.float32)
    header = reference.header.copy()
    header.set_data_dtype(dtype)
    result = nib.Nifti1Image(data, reference.affine, header)
    result.header.set_slope_inter(1, 0)
    return result
