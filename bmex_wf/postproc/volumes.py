"""Tissue volumes (CSF, GM, WM, brain) in mL and a 3-class Atropos reference segmentation.

Label convention everywhere: 0 background, 1 CSF, 2 GM, 3 WM (as the network's ``dseg``).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import nibabel as nib
import numpy as np

from ..labels import CONTRASTS, TISSUE_NAMES, tissue_order

LOGGER = logging.getLogger(__name__)

#: Tissue classes, in label order (label = index + 1).
TISSUES = TISSUE_NAMES
#: Columns of a volumes table, in order.
VOLUME_COLUMNS = ("method", *(f"{t}_mL" for t in TISSUES), "brain_mL")
#: Row names of a volumes table, in order.
METHODS = ("bmex", "atropos_original", "atropos_enhanced")
#: Contrasts Atropos classes can be named for (T2w: CSF brightest, WM darkest).


class TissueError(ValueError):
    """A label map, image or mask is unfit for tissue volumes or segmentation."""


def _name(img: nib.spatialimages.SpatialImage) -> str:
    """The file an image came from, or a stand-in for images built in memory."""
    filename = img.get_filename()
    return str(filename) if filename else "<in-memory image>"


def voxel_volume_ml(img: nib.spatialimages.SpatialImage) -> float:
    """Volume of one voxel of ``img`` in mL (mm³ / 1000), from the affine."""
    return float(abs(np.linalg.det(img.affine[:3, :3]))) / 1000.0


def tissue_volumes(dseg: nib.spatialimages.SpatialImage) -> dict[str, float]:
    """Volumes of CSF, GM and WM (labels 1, 2, 3) and of the brain (their sum), in mL.

    Parameters
    ----------
    dseg : nibabel image
        Integer label map (0 background, 1 CSF, 2 GM, 3 WM) on its own grid.

    Returns
    -------
    dict
        ``{"CSF": mL, "GM": mL, "WM": mL, "brain": mL}``: voxel counts times the voxel
        volume of ``dseg``.

    Raises
    ------
    TissueError
        When the map is not 3-D, holds non-integer values or labels outside 0..3.
    """
    data = np.asanyarray(dseg.dataobj)
    if data.ndim != 3:
        raise TissueError(f"{_name(dseg)}: a 3-D label map is needed, got shape {data.shape}")
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)) or np.any(data != np.round(data)):
            raise TissueError(f"{_name(dseg)}: label map holds non-integer values")
        data = data.astype(np.int64)
    if data.size and (data.min() < 0 or data.max() > len(TISSUES)):
        extra = sorted(set(np.unique(data).tolist()) - {0, 1, 2, 3})
        raise TissueError(f"{_name(dseg)}: labels {extra[:5]} outside 0 (background), "
                          "1 (CSF), 2 (GM), 3 (WM)")
    counts = np.bincount(data.ravel().astype(np.int64), minlength=len(TISSUES) + 1)
    voxel_ml = voxel_volume_ml(dseg)
    volumes = {tissue: float(counts[label]) * voxel_ml
               for label, tissue in enumerate(TISSUES, start=1)}
    volumes["brain"] = sum(volumes.values())
    return volumes


@contextmanager
def _ants_seed(seed: int) -> Iterator[None]:
    """Set ``ANTS_RANDOM_SEED`` (read by ANTs' random generators) for the duration."""
    previous = os.environ.get("ANTS_RANDOM_SEED")
    os.environ["ANTS_RANDOM_SEED"] = str(int(seed))
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("ANTS_RANDOM_SEED", None)
        else:
            os.environ["ANTS_RANDOM_SEED"] = previous


@contextmanager
def _private_tempdir() -> Iterator[str]:
    """Point :mod:`tempfile` at a private folder, removed afterwards.

    ``ants.atropos`` writes its class probability images to the temporary folder and never
    deletes them (three files per call), which would fill ``/tmp`` over a large dataset.
    """
    previous = tempfile.tempdir
    with tempfile.TemporaryDirectory(prefix="bmex-atropos-") as folder:
        tempfile.tempdir = folder
        try:
            yield folder
        finally:
            tempfile.tempdir = previous


def _brain_and_mask(brain: nib.spatialimages.SpatialImage,
                    mask: nib.spatialimages.SpatialImage) -> tuple[np.ndarray, np.ndarray]:
    data = np.asanyarray(brain.dataobj).astype(np.float32)
    inside = np.asanyarray(mask.dataobj)
    if data.ndim != 3:
        raise TissueError(f"{_name(brain)}: a 3-D image is needed, got shape {data.shape}")
    if inside.shape != data.shape:
        raise TissueError(f"{_name(mask)}: mask shape {inside.shape} differs from the image "
                          f"shape {data.shape} ({_name(brain)}); both must share one grid")
    if not np.allclose(mask.affine, brain.affine, atol=1e-3):
        raise TissueError(f"{_name(mask)}: mask affine differs from that of {_name(brain)}; "
                          "both must share one grid")
    if not np.all(np.isfinite(data)):
        raise TissueError(f"{_name(brain)}: image holds non-finite values")
    inside = inside > 0
    if inside.sum() < 100:
        raise TissueError(f"{_name(mask)}: the brain mask has {int(inside.sum())} voxels; "
                          "at least 100 are needed for a 3-class segmentation")
    if np.ptp(data[inside]) <= 0:
        raise TissueError(f"{_name(brain)}: the image is constant inside the brain mask")
    return data, inside


def order_classes(labels: np.ndarray, intensities: np.ndarray, contrast: str,
                  age_group: str | None = None) -> np.ndarray:
    """Rename classes 1..3 of ``labels`` to 1 CSF, 2 GM, 3 WM by their mean intensity.

    The tissue order from darkest to brightest is that of the contrast and age group
    (:func:`bmex_wf.labels.tissue_order`): T1w CSF < GM < WM, T2w the reverse;
    for ``Fetal``, ``Month0`` and ``Month3`` grey and white matter swap (unmyelinated white
    matter). ``age_group=None`` means after the first months. Background (0) stays 0.
    """
    if contrast not in CONTRASTS:
        raise TissueError(f"unknown contrast {contrast!r}; expected one of {CONTRASTS}")
    means = [intensities[labels == k].mean() if np.any(labels == k) else np.inf
             for k in (1, 2, 3)]
    ranked = np.argsort(means, kind="stable") + 1  # class labels, darkest first
    lut = np.zeros(4, dtype=np.uint8)
    lut[ranked] = tissue_order(contrast, age_group or "Month24")
    return lut[labels]


def atropos_dseg(brain: nib.spatialimages.SpatialImage, mask: nib.spatialimages.SpatialImage,
                 *, contrast: str = "T1w", iterations: int = 5, seed: int = 0,
                 age_group: str | None = None) -> nib.Nifti1Image:
    """3-class Atropos segmentation (antspyx) of the brain inside ``mask``.

    K-means initialisation, a light MRF prior (``[0.1,1x1x1]``) and ``iterations`` EM
    iterations. Classes are named by their mean intensity, the contrast and the age group
    (:func:`order_classes`: T1w CSF < GM < WM, T2w reversed; grey and white matter swap
    in the first months). The segmentation runs on the voxel array with the image's voxel
    spacing, so the result lies on the input grid.

    Parameters
    ----------
    brain : nibabel image
        Brain (or head) image; only voxels inside ``mask`` are classified.
    mask : nibabel image
        Brain mask on the same grid (non-zero = brain).
    contrast : str
        ``T1w`` or ``T2w``.
    iterations : int
        Atropos EM iterations.
    seed : int
        Value of ``ANTS_RANDOM_SEED`` while Atropos runs.
    age_group : str, optional
        BME-X age group (``Fetal``, ``Month0`` ... ``Month24``); default: after the first
        months.

    Returns
    -------
    nibabel.Nifti1Image
        uint8 labels (0 background, 1 CSF, 2 GM, 3 WM) with the affine of ``brain``.

    Raises
    ------
    TissueError
        On an unknown contrast, a non-3-D image, a mask on another grid, an empty or tiny
        mask, or an image constant inside the mask.
    """
    import ants

    if contrast not in CONTRASTS:
        raise TissueError(f"{_name(brain)}: unknown contrast {contrast!r}; "
                          f"expected one of {CONTRASTS}")
    if int(iterations) < 1:
        raise TissueError(f"Atropos needs at least 1 iteration, got {iterations}")
    data, inside = _brain_and_mask(brain, mask)
    spacing = tuple(float(z) for z in np.sqrt((brain.affine[:3, :3] ** 2).sum(axis=0)))
    image = ants.from_numpy(np.where(inside, data, 0).astype(np.float32), spacing=spacing)
    ants_mask = ants.from_numpy(inside.astype(np.float32), spacing=spacing)
    with _ants_seed(seed), _private_tempdir():
        result = ants.atropos(a=image, x=ants_mask, i="KMeans[3]", m="[0.1,1x1x1]",
                              c=f"[{int(iterations)},0]", priorweight=0.0)
    labels = np.rint(result["segmentation"].numpy()).astype(np.uint8)
    labels[~inside] = 0
    labels = order_classes(labels, data, contrast, age_group)
    out = nib.Nifti1Image(labels, brain.affine)
    out.header.set_xyzt_units("mm")
    return out


def _number(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{float(value):.3f}"


def volumes_table(rows: Mapping[str, Mapping[str, float]]) -> str:
    """TSV text with columns :data:`VOLUME_COLUMNS`, one row per method.

    Parameters
    ----------
    rows
        Method name (``bmex``, ``atropos_original``, ``atropos_enhanced``) -> volumes as
        returned by :func:`tissue_volumes`. Known methods come first in :data:`METHODS`
        order; missing values are written as ``n/a``.
    """
    order = [m for m in METHODS if m in rows] + [m for m in rows if m not in METHODS]
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(VOLUME_COLUMNS)
    for method in order:
        volumes = rows[method]
        writer.writerow([method, *(_number(volumes.get(t)) for t in (*TISSUES, "brain"))])
    return buf.getvalue()


def read_volumes_table(path: str | Path) -> dict[str, dict[str, float | None]]:
    """Read a table written from :func:`volumes_table`: method -> {tissue or brain: mL}.

    Raises
    ------
    TissueError
        When the file lacks the ``method`` column or holds a non-numeric volume.
    """
    path = Path(path)
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if not reader.fieldnames or "method" not in reader.fieldnames:
            raise TissueError(f"{path}: not a volumes table (no 'method' column)")
        table: dict[str, dict[str, float | None]] = {}
        for row in reader:
            values: dict[str, float | None] = {}
            for key in (*TISSUES, "brain"):
                text = (row.get(f"{key}_mL") or "n/a").strip()
                try:
                    values[key] = None if text == "n/a" else float(text)
                except ValueError:
                    raise TissueError(f"{path}: {key}_mL of {row['method']!r} is not a "
                                      f"number ({text!r})") from None
            table[row["method"]] = values
    return table
