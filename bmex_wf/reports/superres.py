"""Super-resolution figure: the input beside the network-grid enhanced image, across its slices.

The input is upsampled onto the network grid by nearest neighbour, so its thick slices show as
blocks; both are cut in a plane that contains the input's coarsest voxel axis (coronal, or axial
when the thick axis points anterior-posterior).
"""

from __future__ import annotations

from pathlib import Path

import nibabel as nb
import numpy as np
from nibabel.affines import voxel_sizes

#: World axes of the canonical (RAS+) frame, as axis codes of either sense.
_WORLD_CODES = ("RL", "AP", "SI")
#: Fractions of the input's extent (along the cut axis) where the cuts are taken.
CUT_FRACTIONS = (0.35, 0.5, 0.65)


def coarsest_world_axis(img: nb.spatialimages.SpatialImage) -> int:
    """RAS+ axis (0 R, 1 A, 2 S) closest to the image's coarsest voxel axis."""
    axis = int(np.argmax(voxel_sizes(img.affine)[:3]))
    code = nb.aff2axcodes(img.affine)[axis]
    return next(i for i, codes in enumerate(_WORLD_CODES) if code in codes)


def cut_axis(coarse_axis: int) -> int:
    """RAS+ axis the cuts are taken along: A (coronal planes), or S when the coarse axis is A."""
    return 2 if coarse_axis == 1 else 1


def superres_cuts(original, enhanced, fractions=CUT_FRACTIONS) -> tuple[list, list, int]:
    """2-D cuts of the upsampled input and of the enhanced image, and the cut axis.

    Parameters
    ----------
    original, enhanced : path or nibabel image
        The input image and the enhanced image on the network grid.
    fractions : sequence of float
        Positions of the cuts within the input's non-zero extent along the cut axis.

    Returns
    -------
    before, after : list of ndarray
        Cuts (first axis horizontal) of the input, nearest-neighbour upsampled onto the
        network grid, and of the enhanced image, in the RAS+ frame.
    axis : int
        The RAS+ axis cut along.
    """
    from ..image.resample import resample_to_reference

    original = original if hasattr(original, "affine") else nb.load(str(original))
    enhanced = enhanced if hasattr(enhanced, "affine") else nb.load(str(enhanced))
    upsampled = resample_to_reference(original, enhanced, order=0)
    before = np.asanyarray(nb.as_closest_canonical(upsampled).dataobj).astype(np.float32)
    after = np.asanyarray(nb.as_closest_canonical(enhanced).dataobj).astype(np.float32)
    axis = cut_axis(coarsest_world_axis(original))
    present = np.flatnonzero(np.moveaxis(before, axis, 0).reshape(before.shape[axis], -1).any(1))
    lo, hi = (present[0], present[-1]) if present.size else (0, before.shape[axis] - 1)
    index = [int(np.rint(lo + f * (hi - lo))) for f in fractions]
    return ([np.take(before, i, axis=axis) for i in index],
            [np.take(after, i, axis=axis) for i in index], axis)


def _window(cuts: list) -> tuple[float, float]:
    """Display range of a set of cuts: 0.5th-99.5th percentiles of their non-zero values."""
    values = np.concatenate([c[c != 0].ravel() for c in cuts])
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [0.5, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1)


def plot_superresolution(original, enhanced, out_file, *, voxel_mm: float) -> str:
    """SVG of the input (nearest neighbour on the network grid) beside the enhanced image.

    Returns ``out_file`` as an absolute path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    before, after, axis = superres_cuts(original, enhanced)
    zooms = voxel_sizes((original if hasattr(original, "affine")
                         else nb.load(str(original))).affine)[:3]
    plane = {1: "coronal", 2: "axial"}[axis]
    columns = ((before, f"input ({'x'.join(f'{z:.2g}' for z in zooms)} mm), nearest neighbour"),
               (after, f"enhanced, {voxel_mm:g} mm network grid"))
    fig, axes = plt.subplots(len(before), 2, figsize=(7, 3.2 * len(before)), squeeze=False)
    for col, (cuts, title) in enumerate(columns):
        vmin, vmax = _window(cuts)
        for row, cut in enumerate(cuts):
            ax = axes[row, col]
            ax.imshow(cut.T, origin="lower", cmap="gray", vmin=vmin, vmax=vmax,
                      interpolation="nearest")
            ax.set_axis_off()
            if row == 0:
                ax.set_title(title, fontsize=9)
    fig.suptitle(f"Super-resolution, {plane} cuts across the thick slices", fontsize=10)
    fig.tight_layout()
    out = Path(out_file).absolute()
    fig.savefig(out, format="svg")
    plt.close(fig)
    return str(out)
