"""Tissue contrast (TCT) and quality index (spec 8.4 step 12)."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bmex_wf.postproc.quality import quality_index, quality_report, tissue_contrast
from bmex_wf.preproc.intensity import match_histogram, template_landmarks, window_intensities
from tests.helpers import shared_path


def test_tct_of_known_classes():
    data = np.array([90, 110, 190, 210, 5, 999], dtype=float)
    labels = np.array([2, 2, 3, 3, 0, 1])
    # means 100 and 200, population SDs 10 and 10
    assert tissue_contrast(data, labels) == pytest.approx(100 / math.sqrt(200))


def test_tct_ignores_other_labels_and_scale():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(20, 20, 20))
    data = rng.normal(100, 10, size=labels.shape) + 30 * (labels == 3)
    tct = tissue_contrast(data, labels)
    other = data.copy()
    other[labels < 2] = rng.uniform(0, 1e4, size=int(np.sum(labels < 2)))
    assert tissue_contrast(other, labels) == pytest.approx(tct)
    assert tissue_contrast(-3 * data + 7, labels) == pytest.approx(tct)
    # GM/WM swapped sides: the absolute difference keeps the contrast positive.
    assert tissue_contrast(-data, labels) == pytest.approx(tct)


def test_missing_label_gives_nan_and_warning():
    data = np.arange(8.0)
    with pytest.warns(RuntimeWarning, match=r"no voxel labelled WM \(3\)"):
        assert math.isnan(tissue_contrast(data, np.array([0, 1, 2, 2, 2, 1, 0, 0])))
    with pytest.warns(RuntimeWarning, match="zero spread"):
        assert math.isnan(tissue_contrast(np.ones(4), np.array([2, 2, 3, 3])))
    with pytest.raises(ValueError, match="shape"):
        tissue_contrast(data, np.zeros(7))


def test_quality_index():
    assert quality_index(2.0, 4.0) == 0.5
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert math.isnan(quality_index(2.0, 0.0))
    with pytest.warns(RuntimeWarning):
        assert math.isnan(quality_index(math.nan, 1.0))


def test_denoising_a_real_image_lowers_qi():
    anat = shared_path("data", "test_BIDS", "sub-0009", "ses-V01", "anat")
    data = window_intensities(np.asarray(nib.load(next(anat.glob("*.nii.gz"))).dataobj))
    original = match_histogram(data, template_landmarks("Template-Fetal-T2w"))
    rng = np.random.default_rng(1)
    noisy = original + rng.normal(0, 40, size=original.shape).astype(np.float32) * (original > 0)
    smooth = ndimage.gaussian_filter(original, 1.0)
    brain = original > 0
    labels = np.zeros(original.shape, dtype=np.uint8)
    # T2w: GM darker than WM is not assumed; two classes split at the brain median.
    labels[brain] = np.where(smooth[brain] < np.median(smooth[brain]), 2, 3)
    report = quality_report(noisy, smooth, labels)
    assert report["tct_after"] > report["tct_before"] > 0
    assert report["qi"] == pytest.approx(report["tct_before"] / report["tct_after"])
    assert report["qi"] < 1
