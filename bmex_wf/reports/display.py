"""Display grid: resample images once onto a coarse, axis-aligned grid for plotting.

Oblique or finely sampled volumes make nilearn resample every time it draws a cut. The
reportlets therefore draw from copies on a ~1 mm grid aligned with RAS+ and cropped to the
head, so that each figure is made from arrays plotting can use as they are.
"""

from __future__ import annotations

import logging
from itertools import product
from pathlib import Path

import nibabel as nb
import numpy as np

LOGGER = logging.getLogger("bmex_wf.reports")

DISPLAY_SPACING_MM = 1.0


def is_display_grid(img: nb.spatialimages.SpatialImage, spacing_mm: float = DISPLAY_SPACING_MM,
                    tol: float = 1e-3) -> bool:
    """Whether ``img`` already sits on an axis-aligned RAS+ grid no finer than ``spacing_mm``."""
    rzs = img.affine[:3, :3]
    off_diagonal = rzs - np.diag(np.diag(rzs))
    diag = np.diag(rzs)
    return bool(np.all(np.abs(off_diagonal) < tol) and np.all(diag > 0)
                and np.all(diag >= spacing_mm * (1 - tol)))


def _nonzero_box(data: np.ndarray, margin: int) -> tuple[slice, ...]:
    """Voxel slices around the non-zero content (the whole array if it is empty)."""
    nonzero = np.argwhere(data != 0)
    if nonzero.size == 0:
        return tuple(slice(0, n) for n in data.shape)
    lo = np.maximum(nonzero.min(0) - margin, 0)
    hi = np.minimum(nonzero.max(0) + margin + 1, data.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def display_geometry(reference: nb.spatialimages.SpatialImage,
                     spacing_mm: float = DISPLAY_SPACING_MM,
                     margin_vox: int = 4) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of the display grid covering the non-zero part of ``reference``.

    Parameters
    ----------
    reference
        3-D image whose non-zero voxels (plus ``margin_vox``) define the field of view.
    spacing_mm
        Isotropic voxel size of the display grid.
    margin_vox
        Margin kept around the non-zero box, in voxels of ``reference``.

    Returns
    -------
    affine, shape
        A diagonal RAS+ affine with ``spacing_mm`` voxels and the grid's shape.
    """
    data = np.asanyarray(reference.dataobj)
    box = _nonzero_box(data, margin_vox)
    corners = np.array(list(product(*[(s.start, s.stop - 1) for s in box])), dtype=float)
    world = nb.affines.apply_affine(reference.affine, corners)
    lo, hi = world.min(0), world.max(0)
    shape = tuple(int(n) for n in np.ceil((hi - lo) / spacing_mm).astype(int) + 1)
    affine = np.diag([spacing_mm, spacing_mm, spacing_mm, 1.0])
    affine[:3, 3] = lo
    return affine, shape


def to_display_grid(img: nb.spatialimages.SpatialImage, affine: np.ndarray,
                    shape: tuple[int, int, int], *, labels: bool = False) -> nb.Nifti1Image:
    """Resample ``img`` onto the display grid (linear, or nearest for label maps)."""
    from nilearn.image import resample_img

    img = nb.Nifti1Image(np.asanyarray(img.dataobj).squeeze().astype(
        np.int16 if labels else np.float32), img.affine)
    out = resample_img(img, target_affine=affine, target_shape=shape,
                       interpolation="nearest" if labels else "linear",
                       force_resample=True, copy_header=True)
    return nb.Nifti1Image(np.asanyarray(out.dataobj), affine)


def display_images(reference: str | Path, others: dict[str, str | Path] | None = None, *,
                   labels: tuple[str, ...] = (), out_dir: str | Path,
                   spacing_mm: float = DISPLAY_SPACING_MM) -> dict[str, str]:
    """Write ``reference`` and ``others`` on one display grid; return the new file names.

    Images that are already on a display grid with the reference's geometry are passed through
    unchanged, so a chain of reportlets resamples each volume only once.

    Parameters
    ----------
    reference
        Image defining the display field of view (its non-zero voxels).
    others
        Name -> image path, resampled onto the same grid.
    labels
        Names in ``others`` holding label maps or masks (nearest-neighbour resampling).
    out_dir
        Where resampled files are written.
    spacing_mm
        Display voxel size.

    Returns
    -------
    dict
        ``{"reference": path, name: path, ...}``.
    """
    others = dict(others or {})
    ref_img = nb.load(str(reference))
    paths = {"reference": str(reference), **{k: str(v) for k, v in others.items()}}
    imgs = {name: nb.load(p) for name, p in paths.items()}
    if is_display_grid(ref_img, spacing_mm) and all(
            i.shape[:3] == ref_img.shape[:3] and np.allclose(i.affine, ref_img.affine, atol=1e-4)
            for i in imgs.values()):
        return paths
    affine, shape = display_geometry(ref_img, spacing_mm)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    result = {}
    for name, img in imgs.items():
        out = out_dir / f"display_{name}.nii.gz"
        to_display_grid(img, affine, shape, labels=name in labels).to_filename(out)
        result[name] = str(out)
    LOGGER.debug("Display grid %s at %.2f mm for %s", shape, spacing_mm, reference)
    return result
