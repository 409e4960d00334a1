"""Small helpers shared by the brain-mask sources."""

from __future__ import annotations

import nibabel as nib
import numpy as np


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
    from bmex_wf.image.header import header_image

    return header_image(np.asarray(mask, dtype=np.uint8), reference.affine, reference.header)
