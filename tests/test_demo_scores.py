"""Scores of ``bmex-wf demo`` against the clean MNI152 (:mod:`bmex_wf.reports.demo_scores`)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bmex_wf.reports import demo_scores as ds

#: Scores as :func:`~bmex_wf.reports.demo_scores.score_demo` returns them (made-up figures).
EXAMPLE_SCORES = {"reference": ds.REFERENCE,
                  "input": {"fitted_psnr_db": 21.234, "fitted_ssim": 0.81234},
                  "enhanced": {"fitted_psnr_db": 23.456, "fitted_ssim": 0.85678},
                  "tissues": {"GM": {"dice": 0.7123, "volume_ml": 650.4, "reference_volume_ml": 1079.6},
                              "WM": {"dice": 0.8012, "volume_ml": 700.2, "reference_volume_ml": 632.0}}}


@pytest.fixture(scope="module")
def phantom():
    """A smooth 40³ volume, its brain mask and a noisy copy."""
    rng = np.random.default_rng(3)
    x, y, z = np.indices((40, 40, 40)) / 40.0
    clean = 500 + 300 * np.sin(6 * x) * np.cos(5 * y) + 100 * z
    mask = np.linalg.norm(np.stack([x, y, z]) - 0.5, axis=0) < 0.4
    return clean, mask, clean + rng.normal(0, 30, clean.shape)


def test_image_scores_ignore_a_linear_intensity_change(phantom):
    clean, mask, noisy = phantom
    scores = ds.image_scores(noisy, clean, mask)
    rescaled = ds.image_scores(0.37 * noisy - 120, clean, mask)
    assert rescaled["fitted_psnr_db"] == pytest.approx(scores["fitted_psnr_db"], abs=1e-6)
    assert rescaled["fitted_ssim"] == pytest.approx(scores["fitted_ssim"], abs=1e-6)
    # peak = the clean range in the mask, noise sigma 30: PSNR = 20 log10(range / 30)
    peak = np.ptp(clean[mask])
    assert scores["fitted_psnr_db"] == pytest.approx(20 * np.log10(peak / 30), abs=0.2)


def test_image_scores_fall_with_noise(phantom):
    clean, mask, noisy = phantom
    twice = clean + 2 * (noisy - clean)
    low, high = ds.image_scores(twice, clean, mask), ds.image_scores(noisy, clean, mask)
    # twice the noise: up to 6 dB less (the fit shrinks noisy images towards the mean)
    assert high["fitted_psnr_db"] - 6.1 < low["fitted_psnr_db"] < high["fitted_psnr_db"] - 3
    assert low["fitted_ssim"] < high["fitted_ssim"] < 1.0


def test_tissue_scores_dice_and_volumes():
    dseg = np.zeros((30, 30, 30), np.uint8)
    dseg[5:15, 5:15, 5:15] = 2  # GM box of 1000 voxels
    dseg[15:25, 5:15, 5:15] = 3  # WM box next to it
    gm, wm = dseg == 2, dseg == 3
    same = ds.tissue_scores(dseg, {"GM": gm, "WM": wm}, voxel_ml=0.008)
    assert same["GM"] == {"dice": 1.0, "volume_ml": pytest.approx(8.0),
                          "reference_volume_ml": pytest.approx(8.0)}
    assert same["WM"]["dice"] == 1.0
    shifted = ds.tissue_scores(np.roll(dseg, 2, axis=0), {"GM": gm, "WM": wm}, voxel_ml=0.008)
    assert shifted["GM"]["dice"] == pytest.approx(0.8)  # 8 of 10 slices still overlap
    assert shifted["WM"]["dice"] == pytest.approx(0.8)
    assert shifted["GM"]["volume_ml"] == pytest.approx(8.0)
    swapped = ds.tissue_scores(dseg, {"GM": wm, "WM": gm}, voxel_ml=0.008)
    assert swapped["GM"]["dice"] == 0.0


def test_on_grid_keeps_a_same_grid_image_and_resamples_another():
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    ramp = np.indices((20, 20, 20))[0].astype(np.float32)
    reference = nib.Nifti1Image(ramp, affine)
    np.testing.assert_array_equal(ds.on_grid(nib.Nifti1Image(ramp.copy(), affine), reference), ramp)
    coarse = nib.Nifti1Image(ramp[::2, ::2, ::2], np.diag([2.0, 2.0, 2.0, 1.0]))
    back = ds.on_grid(coarse, reference)
    assert back.shape == ramp.shape
    np.testing.assert_allclose(back[1:17, 1:17, 1:17], ramp[1:17, 1:17, 1:17], atol=1e-4)


def test_summary_and_report_table_show_the_figures():
    line = ds.summary_line(EXAMPLE_SCORES)
    assert "\n" not in line
    for text in ("21.23 -> 23.46 dB", "0.8123 -> 0.8568", "GM Dice 0.712, 650 mL (MNI152 1080 mL)",
                 "WM Dice 0.801, 700 mL (MNI152 632 mL)"):
        assert text in line
    table = ds.report_table(EXAMPLE_SCORES)
    rows = {row: text for group in table.values() for row, text in group.items()}
    assert rows["Degraded input"] == "fitted PSNR 21.23 dB, fitted SSIM 0.8123"
    assert rows["Enhanced brain"] == "fitted PSNR 23.46 dB, fitted SSIM 0.8568"
    assert rows["GM (label 2)"].startswith("Dice 0.712; 650 mL")


def test_shortfall_line_only_when_the_enhanced_brain_is_further():
    assert ds.shortfall_line(EXAMPLE_SCORES) is None  # 21.23 -> 23.46 dB
    worse = {**EXAMPLE_SCORES, "enhanced": {**EXAMPLE_SCORES["enhanced"], "fitted_psnr_db": 20.62}}
    line = ds.shortfall_line({**worse, "input": {**EXAMPLE_SCORES["input"], "fitted_psnr_db": 21.00}})
    assert "0.38 dB further" in line and "official BME-X weights" in line and "\n" not in line
    demo_like = {**worse, "input": {**EXAMPLE_SCORES["input"], "fitted_psnr_db": 20.996},
                 "enhanced": {**EXAMPLE_SCORES["enhanced"], "fitted_psnr_db": 20.6226}}
    assert "0.38 dB further" in ds.shortfall_line(demo_like)  # the printed 21.00 -> 20.62


def fake_demo_outputs(derivatives) -> Path:
    """Demo outputs whose enhanced brain is the clean image rescaled and whose tissues are MNI152's."""
    clean, _ = ds.clean_mni152()
    anat = derivatives / "sub-01" / "anat"
    anat.mkdir(parents=True)
    data = np.asarray(clean.dataobj)
    nib.Nifti1Image((2 * data + 10).astype(np.float32), clean.affine).to_filename(
        anat / "sub-01_desc-enhancedbrain_T1w.nii.gz")
    tissues = ds.mni152_tissues()
    dseg = (2 * tissues["GM"] + 3 * tissues["WM"]).astype(np.uint8)
    nib.Nifti1Image(dseg, clean.affine).to_filename(anat / "sub-01_space-T1w_dseg.nii.gz")
    # an output in another space is not the one scored
    nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), clean.affine).to_filename(
        anat / "sub-01_space-MNI152NLin2009aSym_dseg.nii.gz")
    return anat


def test_score_demo_on_a_fake_run(tmp_path):
    from bmex_wf.cli.demo import build_demo_dataset

    bids = tmp_path / "bids"
    build_demo_dataset(bids, seed=0)
    anat = fake_demo_outputs(tmp_path / "derivatives")
    scores = ds.score_demo(tmp_path / "derivatives", bids)
    assert scores["files"]["dseg"].endswith("sub-01_space-T1w_dseg.nii.gz")
    assert scores["enhanced"]["fitted_psnr_db"] > 80 and scores["enhanced"]["fitted_ssim"] > 0.999
    assert 10 < scores["input"]["fitted_psnr_db"] < 40 and scores["input"]["fitted_ssim"] < 0.99
    for name, values in scores["tissues"].items():
        assert values["dice"] == 1.0
        assert values["volume_ml"] == pytest.approx(values["reference_volume_ml"])
        assert values["volume_ml"] > 300, name
    path = ds.write_scores(scores)
    assert path == anat / ds.SCORES_NAME
    assert ds.find_scores(tmp_path / "derivatives", "sub-01") == json.loads(path.read_text())
    assert ds.find_scores(tmp_path / "derivatives", "02") is None
