"""Intensity windowing (spec 8.3 step 2) and skull add-back (spec 8.4 step 11)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bmex_wf.postproc.skull import add_skull_back
from bmex_wf.preproc.intensity import window_intensities
from tests.helpers import shared_path


def test_window_maps_percentiles_of_nonzero_voxels():
    values = np.arange(1, 100_001, dtype=np.float64)
    data = np.concatenate([values, np.zeros(50_000)])
    out = window_intensities(data)
    lo, hi = np.percentile(values, [0.001, 99.999])
    assert out.dtype == np.float32 and out.shape == data.shape
    np.testing.assert_allclose(
        out[:100_000], np.clip((values - lo) / (hi - lo) * 1000, 0, 1000), atol=1e-3
    )
    assert np.all(out[100_000:] == 0)
    # The zeros do not take part: the same mapping without them.
    np.testing.assert_array_equal(window_intensities(values), out[:100_000])


def test_window_options_and_clamping():
    data = np.linspace(-50, 50, 1001)
    out = window_intensities(data, lower_pct=10, upper_pct=90, out_max=1.0)
    assert out.min() == 0 and out.max() == 1.0
    assert np.sum(out == 0) == np.sum(data <= np.percentile(data[data != 0], 10))
    np.testing.assert_allclose(out[500], 0.5, atol=1e-3)  # the middle voxel
    with pytest.raises(ValueError, match="percentiles"):
        window_intensities(data, lower_pct=90, upper_pct=10)


def test_window_ignores_non_finite_voxels():
    rng = np.random.default_rng(0)
    data = rng.uniform(1, 100, size=(20, 20, 20))
    reference = window_intensities(data)
    data[0, 0, :3] = [np.nan, np.inf, -np.inf]
    out = window_intensities(data)
    np.testing.assert_array_equal(out[0, 0, :3], [0, 1000, 0])
    finite = np.isfinite(data)
    # The other voxels barely move (the percentiles are of 7997 instead of 8000 voxels).
    np.testing.assert_allclose(out[finite], reference[finite], atol=1.0)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (np.zeros((4, 4, 4)), 0.0),  # all zero: (0, 1) as a last resort
        (np.full((4, 4, 4), 5.0), 1000.0),  # constant: lo == hi -> (0, 1)
        (np.full((4, 4, 4), 0.0005), 0.5),
        (np.full((4, 4, 4), np.nan), 0.0),
    ],
)
def test_window_fallbacks(data, expected):
    np.testing.assert_allclose(window_intensities(data), expected, atol=1e-6)


def test_window_recomputes_over_all_voxels_when_nonzero_is_degenerate():
    data = np.array([0.0] * 99 + [7.0] * 99)  # non-zero voxels all equal -> use all finite voxels
    out = window_intensities(data)
    assert out[0] == 0 and out[-1] == 1000


def test_window_real_image_is_monotonic():
    anat = shared_path("data", "test_BIDS", "sub-0009", "ses-V01", "anat")
    data = np.asarray(nib.load(next(anat.glob("*.nii.gz"))).dataobj)
    out = window_intensities(data)
    assert out.min() == 0 and out.max() == 1000
    order = np.argsort(data, axis=None, kind="stable")
    assert np.all(np.diff(out.ravel()[order]) >= 0)
    nonzero = data != 0
    # 0.001 % of the brain voxels lie above the upper percentile.
    assert np.mean(out[nonzero] == 1000) < 1e-4
    assert np.all(out[~nonzero] == 0)


def _synthetic_head():
    from bmex_wf.brainmask.synthetic_head import synthetic_head

    anat = shared_path("data", "test_BIDS", "sub-0005", "ses-V01", "anat")
    img = nib.load(next(anat.glob("*.nii.gz")))
    brain = img.slicer[::3, ::3, ::3]  # a 2.4 mm copy keeps the test fast
    head, mask = synthetic_head(brain, seed=1)
    return np.asarray(head.dataobj), np.asarray(mask.dataobj) > 0


def test_skull_add_back_on_synthetic_head():
    head, mask = _synthetic_head()
    brain = head[mask]
    # An "enhanced" brain in template units: a monotonic, nonlinear change of scale.
    enhanced = np.zeros_like(head)
    enhanced[mask] = 1000 * np.sqrt(brain / brain.max())
    out = add_skull_back(enhanced, head, mask)
    assert out.dtype == np.float32 and out.shape == head.shape
    np.testing.assert_array_equal(out[~mask], head[~mask].astype(np.float32))
    # Inside, the intensities are back on the original brain's scale.
    for q in (3, 5, 10, 25, 50, 75, 95, 99):
        assert abs(np.percentile(out[mask], q) - np.percentile(brain, q)) < 0.01 * np.percentile(
            brain, 95
        )
    assert np.corrcoef(out[mask], brain)[0, 1] > 0.99
    # Without matching the enhanced brain would be off-scale against the skull.
    assert abs(np.median(enhanced[mask]) - np.median(brain)) > 0.1 * np.median(brain)


def test_skull_add_back_bad_inputs():
    data = np.ones((5, 5, 5))
    with pytest.raises(ValueError, match="shapes differ"):
        add_skull_back(data, data, np.ones((5, 5, 4)))
    with pytest.raises(ValueError, match="mask is empty"):
        add_skull_back(data, data, np.zeros((5, 5, 5)))
