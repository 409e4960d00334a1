"""N4 bias-field correction on a shrunk image, applied at full resolution."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bmex_wf.preproc.intensity import window_intensities
from bmex_wf.preproc.n4 import N4_ITERATIONS, n4_bias_correct
from tests.helpers import shared_path


def smooth_field(shape) -> np.ndarray:
    """A multiplicative bias field spanning about 0.6..1.6."""
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return np.exp(0.3 * x + 0.2 * y * z - 0.2 * z**2)


@pytest.fixture(scope="module")
def real_brain() -> nib.Nifti1Image:
    """sub-0002 at 3.2 mm (every 4th voxel), windowed to 0..1000."""
    anat = shared_path("data", "test_BIDS", "sub-0002", "ses-V01", "anat")
    img = nib.load(next(anat.glob("*.nii.gz"))).slicer[::4, ::4, ::4]
    return nib.Nifti1Image(window_intensities(np.asarray(img.dataobj)), img.affine, img.header)


def test_removes_synthetic_bias_from_real_brain(real_brain):
    clean = np.asarray(real_brain.dataobj)
    field = smooth_field(clean.shape)
    biased = nib.Nifti1Image(
        (clean * field).astype(np.float32), real_brain.affine, real_brain.header
    )
    out = n4_bias_correct(biased, shrink_factor=2)
    corrected = np.asarray(out.dataobj)
    brain = clean > 0

    def corr(a):
        return np.corrcoef(a[brain], clean[brain])[0, 1]

    assert corr(corrected) > 0.99 > corr(biased.get_fdata())
    # The estimated field follows the imposed one.
    estimate = biased.get_fdata()[brain] / corrected[brain]
    assert np.corrcoef(estimate, field[brain])[0, 1] > 0.95
    # Geometry and type kept.
    assert out.shape == biased.shape and np.allclose(out.affine, biased.affine)
    assert corrected.dtype == np.float32 and out.get_data_dtype() == np.float32


def test_mask_limits_the_fit(real_brain):
    clean = np.asarray(real_brain.dataobj)
    field = smooth_field(clean.shape)
    biased = nib.Nifti1Image((clean * field).astype(np.float32), real_brain.affine)
    half = np.zeros(clean.shape, dtype=bool)
    half[: clean.shape[0] // 2] = True
    with_mask = np.asarray(
        n4_bias_correct(
            biased, mask=half & (clean > 0), shrink_factor=2, iterations=(20, 20)
        ).dataobj
    )
    without = np.asarray(n4_bias_correct(biased, shrink_factor=2, iterations=(20, 20)).dataobj)
    assert not np.allclose(with_mask, without)
    # The output covers the whole image, fitted or not.
    assert np.all(np.isfinite(with_mask)) and np.all(with_mask[clean > 0] > 0)


def test_release_iteration_schedule():
    assert N4_ITERATIONS == (50, 50, 30, 20)


def test_bad_inputs():
    img = nib.Nifti1Image(np.ones((8, 8, 8), dtype=np.float32), np.eye(4))
    with pytest.raises(ValueError, match="mask shape"):
        n4_bias_correct(img, mask=np.ones((8, 8, 7)))
    with pytest.raises(ValueError, match="no voxel to fit"):
        n4_bias_correct(img, mask=np.zeros((8, 8, 8)))
    with pytest.raises(ValueError, match="3-D"):
        n4_bias_correct(nib.Nifti1Image(np.ones((8, 8, 8, 2), dtype=np.float32), np.eye(4)))
    with pytest.raises(ValueError, match="invalid N4 settings"):
        n4_bias_correct(img, shrink_factor=0)
