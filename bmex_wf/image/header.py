"""NIfTI headers that hold exactly the affine they are given, and on-disk data types."""

from __future__ import annotations

import nibabel as nib
import numpy as np


def storable(data: np.ndarray) -> tuple[np.ndarray, np.dtype]:
    """``(data, on-disk type)`` for writing ``data`` to NIfTI.

    Booleans become uint8; float64 is stored as float32 and int64 as int32.
    """
    data = np.asanyarray(data)
    if data.dtype == bool:
        data = data.astype(np.uint8)
    stored = {np.dtype(np.float64): np.float32, np.dtype(np.int64): np.int32}.get(data.dtype,
                                                                                   data.dtype)
    return data, np.dtype(stored)


def header_image(data: np.ndarray, affine: np.ndarray, header: nib.Nifti1Header | None,
                 codes: tuple[int, int] | None = None) -> nib.Nifti1Image:
    """NIfTI-1 image whose affine is exactly the one its header stores.

    Header fields (units, intent, description) come from ``header`` (may be
    None); ``affine`` goes into the qform and sform with ``codes`` (default: the
    header's); when both codes are 0 the sform gets code 2 ("aligned"), and when
    the qform alone cannot hold ``affine`` (shears) the sform does. The image's
    affine is then read back from the header, so writing it changes no field.
    The on-disk type follows the data (:func:`storable`); scaling is reset.
    """
    hdr = header.copy() if isinstance(header, nib.Nifti1Header) else (
        nib.Nifti1Header() if header is None else nib.Nifti1Header.from_header(header))
    data, stored = storable(data)
    hdr.set_data_dtype(stored)
    hdr.set_slope_inter(None, None)
    hdr["cal_min"] = hdr["cal_max"] = 0
    qcode, scode = codes if codes is not None else (int(hdr["qform_code"]), int(hdr["sform_code"]))
    if not qcode and not scode:
        scode = 2
    hdr.set_qform(affine, code=qcode)
    hdr.set_sform(affine, code=scode)
    if not np.allclose(hdr.get_best_affine(), affine, atol=1e-4):
        hdr.set_sform(affine, code=scode or 2)
    return nib.Nifti1Image(data, hdr.get_best_affine(), hdr)
