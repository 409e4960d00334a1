"""Histogram matching with stored landmarks equals SimpleITK's HistogramMatchingImageFilter."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from bmex_wf.preproc.intensity import (
    LandmarksError,
    compute_landmarks,
    match_histogram,
    template_landmarks,
    template_names,
    window_intensities,
)
from tests.helpers import shared_path

TOLERANCE = 0.05  # on the 0..1000 template scale


def sitk_match(source: np.ndarray, reference) -> np.ndarray:
    """The release's call: 1024 levels, 7 match points, threshold at mean, float32 images."""
    if isinstance(reference, np.ndarray):
        reference = sitk.GetImageFromArray(reference.astype(np.float32))
    matcher = sitk.HistogramMatchingImageFilter()
    matcher.SetNumberOfHistogramLevels(1024)
    matcher.SetNumberOfMatchPoints(7)
    matcher.ThresholdAtMeanIntensityOn()
    out = matcher.Execute(sitk.GetImageFromArray(source.astype(np.float32)), reference)
    return sitk.GetArrayFromImage(out)


def real_image(subject: str, crop: int | None = 150) -> np.ndarray:
    """Windowed test_BIDS image of a subject, centrally cropped to ``crop`` voxels per axis."""
    anat = shared_path("data", "test_BIDS", f"sub-{subject}", "ses-V01", "anat")
    data = np.asarray(nib.load(next(anat.glob("*.nii.gz"))).dataobj)
    if crop:
        data = data[
            tuple(slice(max(0, (n - crop) // 2), (n - crop) // 2 + crop) for n in data.shape)
        ]
    return window_intensities(data)


@pytest.mark.parametrize(
    ("subject", "template", "crop"),
    [
        ("0002", "Template-Month24-T1w", 150),
        ("0004", "Template-Month12-T1w", 150),
        ("0007", "Template-Month3-T1w", 150),
        ("0008", "Template-Month0-T2w", 150),
        ("0009", "Template-Fetal-T2w", None),
    ],
)
def test_matches_simpleitk_with_real_template(subject, template, crop):
    source = real_image(subject, crop)
    path = shared_path("data", "templates", f"{template}.nii.gz")
    expected = sitk_match(source, sitk.ReadImage(str(path), sitk.sitkFloat32))
    result = match_histogram(source, template_landmarks(template))
    assert result.dtype == np.float32 and result.shape == source.shape
    assert np.abs(result - expected).max() <= TOLERANCE
    # The matching is not the identity: the template's landmarks moved the intensities.
    assert np.abs(result - source).max() > 10 * TOLERANCE


def test_matches_simpleitk_on_raw_scanner_units():
    anat = shared_path("data", "test_BIDS", "sub-0009", "ses-V01", "anat")
    source = np.asarray(nib.load(next(anat.glob("*.nii.gz"))).dataobj, dtype=np.float32)
    path = shared_path("data", "templates", "Template-Fetal-T2w.nii.gz")
    expected = sitk_match(source, sitk.ReadImage(str(path), sitk.sitkFloat32))
    assert (
        np.abs(match_histogram(source, template_landmarks("Template-Fetal-T2w")) - expected).max()
        <= TOLERANCE
    )


def test_shipped_landmarks_are_those_of_the_template_files(templates_dir):
    files = sorted(templates_dir.glob("Template-*.nii.gz"))
    assert template_names() == [f.name.removesuffix(".nii.gz") for f in files]
    path = templates_dir / "Template-Month24-T1w.nii.gz"
    stored = template_landmarks("Template-Month24-T1w")
    assert stored["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    fresh = compute_landmarks(np.asarray(nib.load(path).dataobj, dtype=np.float32))
    for key in ("minimum", "maximum", "threshold"):
        assert stored[key] == fresh[key]
    np.testing.assert_array_equal(stored["quantiles"], fresh["quantiles"])


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_simpleitk_on_synthetic_volumes(seed):
    rng = np.random.default_rng(seed)
    shape = (40, 36, 30)
    source = rng.gamma(2.0 + seed, 50.0, size=shape).astype(np.float32)
    source[:5] = 0  # background below the mean threshold
    reference = (rng.normal(400, 120, size=(32, 32, 32)).clip(0, None) + 3 * seed).astype(
        np.float32
    )
    expected = sitk_match(source, reference)
    landmarks = compute_landmarks(reference.transpose(2, 1, 0))  # voxel order does not matter
    assert np.abs(match_histogram(source, landmarks) - expected).max() <= 1e-3


def test_own_landmarks_give_identity():
    rng = np.random.default_rng(3)
    data = rng.uniform(0, 1000, size=(30, 30, 30)).astype(np.float32)
    np.testing.assert_allclose(match_histogram(data, compute_landmarks(data)), data, atol=1e-3)


def test_affine_reference_maps_affinely():
    rng = np.random.default_rng(4)
    data = rng.gamma(3.0, 60.0, size=(40, 40, 40)).astype(np.float32)
    result = match_histogram(data, compute_landmarks(2.0 * data + 100.0))
    inside = data >= data.mean()  # above the threshold the mapping is landmark to landmark
    np.testing.assert_allclose(result[inside], 2.0 * data[inside] + 100.0, rtol=1e-3)


def test_landmarks_fields():
    landmarks = template_landmarks("Template-Month24-T1w")
    assert (
        landmarks["levels"] == 1024
        and landmarks["match_points"] == 7
        and landmarks["threshold_at_mean"]
    )
    assert len(landmarks["quantiles"]) == 7
    assert landmarks["minimum"] <= landmarks["threshold"] < min(landmarks["quantiles"])
    assert (
        np.all(np.diff(landmarks["quantiles"]) > 0)
        and max(landmarks["quantiles"]) < landmarks["maximum"]
    )
    json.dumps(landmarks)  # serialisable for provenance records
    assert template_landmarks("Template-Month24-T1w.nii.gz") == landmarks


def test_unknown_template_is_a_clear_error():
    with pytest.raises(
        LandmarksError, match=r"unknown template 'Template-Month99-T1w'.*Template-Month24-T1w"
    ):
        template_landmarks("Template-Month99-T1w")


def test_bad_inputs():
    landmarks = template_landmarks("Template-Month24-T1w")
    with pytest.raises(LandmarksError, match="match points"):
        match_histogram(np.ones((4, 4, 4)), landmarks, match_points=5)
    with pytest.raises(LandmarksError, match="histogram levels"):
        match_histogram(np.ones((4, 4, 4)), landmarks, levels=256)
    with pytest.raises(LandmarksError, match="lack"):
        match_histogram(np.ones((4, 4, 4)), {"minimum": 0})
    with pytest.raises(ValueError, match="non-finite"):
        match_histogram(np.full((4, 4, 4), np.nan), landmarks)
    with pytest.raises(ValueError, match="empty"):
        compute_landmarks(np.zeros(0))
