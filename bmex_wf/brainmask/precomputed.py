"""The ``precomputed`` source: a user mask on any grid, brought onto the image grid."""

from __future__ import annotations

import os

import nibabel as nib
import numpy as np

from bmex_wf.brainmask.common import mask_image
from bmex_wf.brainmask.errors import SourceUnavailable


def precomputed_mask(mask_file, img) -> nib.Nifti1Image:
    """A user mask file (any grid) binarized and resampled onto ``img``'s grid (nearest).

    Raises :class:`~bmex_wf.image.io.ImageError` (a ``ValueError``) naming the
    file for unreadable, non-mask-like or empty masks and masks outside the image.
    """
    from bmex_wf.image.io import validate_mask

    if not mask_file or not os.path.isfile(mask_file):
        raise SourceUnavailable(f"{mask_file}: mask file not found (source 'precomputed')")
    out = validate_mask(mask_file, img)
    return mask_image(np.asanyarray(out.dataobj) > 0, img)
