"""Reportlet interfaces and the display grid, on a crop of a real oblique scan."""

from __future__ import annotations

import json
import os
import re
import time

import nibabel as nb
import numpy as np
import pytest
from scipy import ndimage

from bmex_wf.reports.display import (
    display_geometry,
    display_images,
    is_display_grid,
    to_display_grid,
)
from bmex_wf.reports.figures import finalize_svg, landmark_values, summary_html
from bmex_wf.reports.qc import load_qc, qc_from_summary

from .helpers import shared_path

T1W = ("data", "test_BIDS", "sub-0001", "ses-V01", "anat", "sub-0001_ses-V01_T1w.nii.gz")

#: A record as the workflow's WriteQC interface writes it.
QC_RECORD = {
    "QI": 0.8731, "TCTBefore": 1.052, "TCTAfter": 1.205, "Contrast": "T1w",
    "AgeMonths": 72.0, "AgeSource": "sub-0001_sessions.tsv (age_years)", "AgeGroup": "Month24",
    "Model": {"path": "/models/BMEX-Month24-T1-model.pt", "sha256": "ab" * 32,
              "builtin": True},
    "Template": "Template-Month24-T1w", "MaskSource": "lifespanstrip", "Device": "cpu",
    "Precision": "fp32", "Tiling": "fast", "Timings": {"EnhanceSeconds": 41.5},
    "Software": {"bmex-wf": "0.1.0", "torch": "2.13.0"},
}


def write_case(src: nb.Nifti1Image, out_dir, name: str = "") -> dict[str, str]:
    """Original, a smoothed stand-in 'enhanced' image, a mask and a 3-class label map."""
    data = np.asanyarray(src.dataobj).astype(np.float32)
    mask = ndimage.binary_fill_holes(data > np.percentile(data[data > 0], 5))
    smooth = ndimage.gaussian_filter(data, 1.0)
    low, high = np.percentile(smooth[mask], [25, 60])
    dseg = np.zeros(data.shape, np.uint8)
    dseg[mask] = 1
    dseg[mask & (smooth > low)] = 2
    dseg[mask & (smooth > high)] = 3
    files = {}
    for key, arr in (("orig", data.astype(np.uint16)), ("enh", smooth),
                     ("mask", mask.astype(np.uint8)), ("dseg", dseg)):
        files[key] = str(out_dir / f"{name}{key}.nii.gz")
        nb.Nifti1Image(arr, src.affine).to_filename(files[key])
    return files


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """An 80³ crop (0.8 mm, oblique affine) of a real T1w scan with synthetic labels."""
    img = nb.load(shared_path(*T1W))
    out = tmp_path_factory.mktemp("case")
    return write_case(img.slicer[110:190, 110:190, 110:190], out)


def test_display_grid_is_axis_aligned_and_covers_the_head(case):
    img = nb.load(case["orig"])
    assert not is_display_grid(img)  # oblique, 0.8 mm
    affine, shape = display_geometry(img, 1.0)
    assert np.allclose(affine[:3, :3], np.eye(3))
    data = np.asanyarray(img.dataobj)
    world = nb.affines.apply_affine(img.affine, np.argwhere(data > 0))
    grid = nb.affines.apply_affine(np.linalg.inv(affine), world)
    assert grid.min() >= -1e-6
    assert np.all(grid.max(0) <= np.array(shape) - 1 + 1e-6)
    out = to_display_grid(img, affine, shape)
    assert is_display_grid(out)
    assert out.shape == shape


def test_display_grid_keeps_labels_and_passes_display_images_through(case, tmp_path):
    files = display_images(case["orig"], {"dseg": case["dseg"], "enh": case["enh"]},
                           labels=("dseg",), out_dir=tmp_path / "a")
    labels = np.unique(np.asanyarray(nb.load(files["dseg"]).dataobj))
    assert set(labels.tolist()) == {0, 1, 2, 3}
    enh = np.asanyarray(nb.load(files["enh"]).dataobj)
    assert len(np.unique(enh)) > 100  # linear interpolation, not nearest
    again = display_images(files["reference"], {"dseg": files["dseg"]}, labels=("dseg",),
                           out_dir=tmp_path / "b")
    assert again == {"reference": files["reference"], "dseg": files["dseg"]}
    assert not (tmp_path / "b").exists()


def _svg(path) -> str:
    with open(path, encoding="utf-8") as fobj:
        text = fobj.read()
    assert text.lstrip().startswith("<svg") or text.startswith("<?xml")
    return text


def test_before_after_flicker_in_three_orientations(case, tmp_path):
    from bmex_wf.interfaces.reportlets import BeforeAfterRPT

    os.chdir(tmp_path)
    res = BeforeAfterRPT(before=case["orig"], after=case["enh"]).run()
    svg = _svg(res.outputs.out_report)
    assert 'class="background-svg"' in svg and 'class="foreground-svg"' in svg
    assert "@keyframes flickerAnimation" in svg
    for image in ("fixed-image", "moving-image"):
        for axis in "zxy":
            assert re.search(rf'id="{image}-{axis}-', svg), (image, axis)
    # drawn from the display grid, not from the oblique input
    assert is_display_grid(nb.load(tmp_path / "display" / "display_reference.nii.gz"))


def test_brain_mask_contour_on_original(case, tmp_path):
    from bmex_wf.interfaces.reportlets import BrainMaskRPT

    os.chdir(tmp_path)
    res = BrainMaskRPT(background_file=case["orig"], mask_file=case["mask"]).run()
    svg = _svg(res.outputs.out_report)
    assert len(re.findall(r'id="segmentation-[zxy]-', svg)) == 3
    assert "foreground-svg" not in svg


def test_tissue_contours_use_one_colour_per_boundary(case, tmp_path):
    from bmex_wf.interfaces.reportlets import TISSUE_COLORS, TissueSegRPT

    os.chdir(tmp_path)
    res = TissueSegRPT(in_file=case["enh"], in_dseg=case["dseg"], in_mask=case["mask"]).run()
    svg = _svg(res.outputs.out_report).lower()
    assert len(re.findall(r'id="segmentation-[zxy]-', svg)) == 3
    for color in TISSUE_COLORS + ["#ff0000"]:
        assert f"stroke: {color}" in svg, color
    # without a mask, no red brain contour
    (tmp_path / "nomask").mkdir()
    os.chdir(tmp_path / "nomask")
    res = TissueSegRPT(in_file=case["enh"], in_dseg=case["dseg"]).run()
    assert "stroke: #ff0000" not in _svg(res.outputs.out_report).lower()


def test_summary_panel_shows_and_embeds_the_qc_record(tmp_path):
    from bmex_wf.interfaces.reportlets import QCSummary

    qc = tmp_path / "qc.json"
    qc.write_text(json.dumps(QC_RECORD))
    os.chdir(tmp_path)
    res = QCSummary(in_qc=str(qc), title="sub-0001_ses-V01_T1w.nii.gz").run()
    with open(res.outputs.out_report) as fobj:
        text = fobj.read()
    table = text.split("<script")[0]
    for expected in ("0.8731", "1.052", "1.205", "Month24", "<td>72</td>", "lifespanstrip",
                     "BMEX-Month24-T1-model.pt", "ab" * 32, "built-in compact model",
                     "Template-Month24-T1w", "Enhance: 41.5 s", "sessions.tsv",
                     "fp32", "fast", "torch 2.13.0"):
        assert expected in table, expected
    record = qc_from_summary(res.outputs.out_report)
    assert record == load_qc(qc)
    assert record["qi"] == 0.8731 and record["builtin"] is True


def test_summary_escapes_html_and_shows_errors():
    text = summary_html({"qi": None, "contrast": "<T1w>", "error": "no age <given>",
                         "raw": {"note": "</script><b>"}})
    assert "&lt;T1w&gt;" in text and "no age &lt;given&gt;" in text
    assert "</script><b>" not in text  # the embedded record cannot close its element


def test_histogram_before_and_after_matching(case, tmp_path):
    from bmex_wf.interfaces.reportlets import IntensityHistogramRPT
    from bmex_wf.preproc.intensity import template_landmarks
    from bmex_wf.reports.figures import matching_histogram_data

    landmarks = template_landmarks("Template-Month24-T1w")
    before, after = matching_histogram_data(case["orig"], case["mask"], landmarks)
    n_mask = int(np.asanyarray(nb.load(case["mask"]).dataobj).sum())
    assert before.shape == after.shape == (n_mask,)
    assert before.min() >= 0 and before.max() <= 1000
    # matching moves the brain's median towards the template's quantiles
    quantiles = landmarks["quantiles"]
    assert (abs(np.median(after) - np.median(quantiles))
            < abs(np.median(before) - np.median(quantiles)))
    os.chdir(tmp_path)
    res = IntensityHistogramRPT(in_file=case["orig"], in_mask=case["mask"],
                                template="Template-Month24-T1w").run()
    assert "<svg" in _svg(res.outputs.out_report)


def test_landmark_values_from_template_record():
    points, threshold = landmark_values({"minimum": 0.0, "maximum": 1000.0, "threshold": 41.0,
                                         "quantiles": [300.0, 100.0, 200.0], "levels": 1024,
                                         "match_points": 3, "threshold_at_mean": True})
    assert points == [100.0, 200.0, 300.0] and threshold == 41.0


def test_finalize_svg_leaves_nothing_for_the_assembler_to_rewrite():
    raw = ('<?xml version="1.0"?>\n<!DOCTYPE svg>\n<svg width="576pt" height="230.4pt" '
           'viewbox="0 0 576 230.4" xmlns="http://www.w3.org/2000/svg">\n<g/>\n</svg>\n')
    out = finalize_svg(raw)
    first = out.splitlines()[0]
    assert first.startswith("<?xml") and "<svg" in first
    assert "width=" not in first and "height=" not in first and 'viewBox="0 0 576' in first
    assert not any(line.strip().startswith("<svg") for line in out.splitlines())
    with pytest.raises(ValueError, match="not an SVG"):
        finalize_svg("<html/>")


@pytest.mark.slow
def test_reportlet_times_on_full_300_cube(tmp_path):
    """Each reportlet of a full 300³ oblique scan: CPU time under 20 s (2-core budget)."""
    from bmex_wf.interfaces.reportlets import BeforeAfterRPT, BrainMaskRPT, TissueSegRPT

    img = nb.load(shared_path(*T1W))
    assert img.shape == (300, 300, 300)
    case = write_case(img, tmp_path)
    jobs = {
        "flicker": BeforeAfterRPT(before=case["orig"], after=case["enh"]),
        "mask": BrainMaskRPT(background_file=case["orig"], mask_file=case["mask"]),
        "dseg": TissueSegRPT(in_file=case["enh"], in_dseg=case["dseg"], in_mask=case["mask"]),
    }
    for name, iface in jobs.items():
        (tmp_path / name).mkdir()
        os.chdir(tmp_path / name)
        cpu = time.process_time()
        iface.run()
        assert time.process_time() - cpu < 20.0, name
