"""The output-resolution choice: which images also get outputs on the network's grid.

``native`` writes every output on the input's grid only; ``network`` adds the enhanced image,
brain mask and tissue maps on the network's isotropic grid (0.8 mm, 0.75 mm fetal) in the
input's axis order; ``auto`` is ``network`` for an input with any voxel axis coarser than
:data:`COARSE_AXIS_MM`, else ``native``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from .labels import OUTPUT_RESOLUTIONS

LOGGER = logging.getLogger("bmex_wf.resolution")

#: An input voxel axis coarser than this (mm) makes ``auto`` write the network-grid outputs.
COARSE_AXIS_MM = 1.01


def resolve_output_resolution(choice: str, zooms: Sequence[float] | None) -> str:
    """``native`` or ``network`` for one image, from ``choice`` and its voxel sizes (mm).

    ``auto`` with unknown ``zooms`` (None) gives ``network``: its outputs include the native
    ones, so nothing is lost.

    >>> resolve_output_resolution("auto", (0.8, 0.8, 3.2)), resolve_output_resolution("auto", (1, 1, 1))
    ('network', 'native')
    """
    if choice not in OUTPUT_RESOLUTIONS:
        raise ValueError(f"unknown output resolution {choice!r}; expected one of "
                         f"{', '.join(OUTPUT_RESOLUTIONS)}")
    if choice != "auto":
        return choice
    if zooms is None:
        LOGGER.debug("output resolution 'auto' without voxel sizes: network grid added")
        return "network"
    return "network" if max(float(z) for z in zooms) > COARSE_AXIS_MM else "native"


def image_zooms(path) -> tuple[float, float, float]:
    """Voxel sizes (mm) of an image's three spatial axes, read from its header's affine."""
    import nibabel as nib
    from nibabel.affines import voxel_sizes

    return tuple(float(z) for z in voxel_sizes(nib.load(str(path)).affine)[:3])


def resolution_label(voxel_mm: float) -> str:
    """BIDS ``res-`` label of a grid: ``0.8`` -> ``0p8``, ``0.75`` -> ``0p75``."""
    return f"{voxel_mm:g}".replace(".", "p")


def resolution_description(voxel_mm: float) -> str:
    """The ``Resolution`` sidecar entry of the network-grid outputs."""
    return (f"{voxel_mm:g} mm isotropic voxels: the enhancement network's grid, in the input "
            "image's axis order and orientation, over its field of view")
