"""The intensity interfaces in Nipype nodes, on real (cropped) and synthetic volumes."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
from nipype.pipeline.engine.nodes import NodeExecutionError

from bmex_wf.image.io import ImageError
from bmex_wf.interfaces.postproc import QualityIndex, SkullAddBack, TissueSegmentation
from bmex_wf.interfaces.preproc import HistogramMatch, N4BiasCorrection, WindowIntensities
from tests import helpers
from tests.helpers import real_crop, shared_path

INTERFACES = (
    WindowIntensities,
    N4BiasCorrection,
    HistogramMatch,
    SkullAddBack,
    QualityIndex,
    TissueSegmentation,
)


def run_node(interface, tmp_path, name="node", **inputs):
    return helpers.run_node(interface(**inputs), tmp_path, name)


def assert_fails_cleanly(interface, tmp_path, match, **inputs):
    """One ImageError (a ValueError) with the expected text, in a node too, and no output written."""
    direct = tmp_path / "bad_direct"
    direct.mkdir(exist_ok=True)
    with pytest.raises(ValueError, match=match) as info:
        interface(**inputs).run(cwd=str(direct))
    assert isinstance(info.value, ImageError) or type(info.value).__name__ == "LandmarksError"
    with pytest.raises(NodeExecutionError, match=match):
        run_node(interface, tmp_path, name="bad", **inputs)
    for folder in (direct, tmp_path / "bad"):
        assert not [p for p in folder.iterdir() if p.suffix in (".gz", ".nii", ".tsv", ".json")]


def save(data, path, affine=None, header=None):
    img = nib.Nifti1Image(
        np.asarray(data), np.diag([1.5, 1.5, 1.5, 1]) if affine is None else affine, header
    )
    img.to_filename(str(path))
    return str(path)


@pytest.mark.parametrize("interface", INTERFACES)
def test_every_trait_is_described(interface):
    for spec in (interface.input_spec(), interface.output_spec()):
        for name, trait in spec.traits().items():
            if name not in ("trait_added", "trait_modified"):
                assert trait.desc, f"{interface.__name__}.{name} has no desc"


def test_window_intensities_real(tmp_path):
    in_file = real_crop(tmp_path)
    out = run_node(WindowIntensities, tmp_path, in_file=in_file)
    img, ref = nib.load(out.out_file), nib.load(in_file)
    data = np.asarray(img.dataobj)
    assert img.shape == ref.shape and np.allclose(img.affine, ref.affine)
    assert data.dtype == np.float32 and data.min() == 0 and data.max() == 1000
    assert np.all(data[np.asarray(ref.dataobj) == 0] == 0)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (np.full((6, 6, 6), np.nan, dtype=np.float32), "NaN"),
        (np.zeros((6, 6, 6), dtype=np.float32), "all voxels are zero"),
        (np.ones((6, 6, 6, 2), dtype=np.float32), "2 volumes"),
        (np.ones((6, 6, 1), dtype=np.float32), "2-D"),
    ],
)
def test_window_intensities_bad_inputs(tmp_path, data, match):
    path = save(data, tmp_path / "bad_input.nii.gz")
    assert_fails_cleanly(
        WindowIntensities, tmp_path, rf"bad_input\.nii\.gz: .*{match}", in_file=path
    )


def test_window_intensities_truncated_file(tmp_path):
    path = save(
        np.random.default_rng(0).random((20, 20, 20), dtype=np.float32), tmp_path / "whole.nii.gz"
    )
    blob = Path(path).read_bytes()
    (tmp_path / "cut.nii.gz").write_bytes(blob[: len(blob) // 2])
    assert_fails_cleanly(
        WindowIntensities, tmp_path, r"cut\.nii\.gz: ", in_file=str(tmp_path / "cut.nii.gz")
    )


def test_n4_node_synthetic(tmp_path):
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, 32)] * 3, indexing="ij")
    clean = np.where(x**2 + y**2 + z**2 < 0.8, 500 + 200 * (np.sin(6 * x) > 0), 0).astype(
        np.float32
    )
    field = np.exp(0.4 * x - 0.2 * y)
    in_file = save(clean * field, tmp_path / "biased.nii.gz", affine=np.diag([3, 3, 3, 1.0]))
    mask_file = save(
        (clean > 0).astype(np.uint8), tmp_path / "mask.nii.gz", affine=np.diag([3, 3, 3, 1.0])
    )
    out = run_node(
        N4BiasCorrection,
        tmp_path,
        in_file=in_file,
        in_mask=mask_file,
        shrink_factor=1,
        iterations=[50, 50],
    )
    corrected = np.asarray(nib.load(out.out_file).dataobj)
    brain = clean > 0
    before = np.corrcoef((clean * field)[brain], clean[brain])[0, 1]
    after = np.corrcoef(corrected[brain], clean[brain])[0, 1]
    assert after > before + 0.05


def test_n4_node_real_and_empty_mask(tmp_path):
    in_file = real_crop(tmp_path, size=60)
    out = run_node(N4BiasCorrection, tmp_path, in_file=in_file, shrink_factor=2, iterations=[10])
    img = nib.load(out.out_file)
    assert img.shape == (60, 60, 60) and np.allclose(img.affine, nib.load(in_file).affine)
    empty = save(
        np.zeros((60, 60, 60), dtype=np.uint8),
        tmp_path / "empty_mask.nii.gz",
        nib.load(in_file).affine,
    )
    assert_fails_cleanly(
        N4BiasCorrection,
        tmp_path,
        r"empty_mask\.nii\.gz: mask is empty",
        in_file=in_file,
        in_mask=empty,
    )


def test_histogram_match_node_equals_simpleitk(tmp_path):
    windowed = run_node(
        WindowIntensities, tmp_path, name="window", in_file=real_crop(tmp_path)
    ).out_file
    out = run_node(HistogramMatch, tmp_path, in_file=windowed, template="Template-Month24-T1w")
    result = np.asarray(nib.load(out.out_file).dataobj)
    matcher = sitk.HistogramMatchingImageFilter()
    matcher.SetNumberOfHistogramLevels(1024)
    matcher.SetNumberOfMatchPoints(7)
    matcher.ThresholdAtMeanIntensityOn()
    template = sitk.ReadImage(
        str(shared_path("data", "templates", "Template-Month24-T1w.nii.gz")), sitk.sitkFloat32
    )
    source = np.asarray(nib.load(windowed).dataobj, dtype=np.float32)
    expected = sitk.GetArrayFromImage(matcher.Execute(sitk.GetImageFromArray(source), template))
    assert np.abs(result - expected).max() <= 0.05
    record = json.loads(Path(out.out_landmarks).read_text())
    assert record["reference_name"] == "Template-Month24-T1w"
    assert len(record["source"]["quantiles"]) == 7 and record["reference"]["sha256"]

    # The same reference given as a landmarks file.
    landmarks = tmp_path / "landmarks.json"
    landmarks.write_text(json.dumps(record["reference"]))
    again = run_node(
        HistogramMatch, tmp_path, name="fromfile", in_file=windowed, landmarks_file=str(landmarks)
    )
    np.testing.assert_array_equal(np.asarray(nib.load(again.out_file).dataobj), result)


def test_histogram_match_unknown_template(tmp_path):
    in_file = save(np.arange(216, dtype=np.float32).reshape(6, 6, 6), tmp_path / "img.nii.gz")
    assert_fails_cleanly(
        HistogramMatch,
        tmp_path,
        "unknown template 'Template-Month5-T1w'",
        in_file=in_file,
        template="Template-Month5-T1w",
    )


def test_histogram_match_bad_landmarks_file(tmp_path):
    in_file = save(np.arange(216, dtype=np.float32).reshape(6, 6, 6), tmp_path / "img.nii.gz")
    short = tmp_path / "short_landmarks.json"
    short.write_text(json.dumps({"minimum": 0, "maximum": 1, "threshold": 0.5, "quantiles": [0.6]}))
    assert_fails_cleanly(
        HistogramMatch,
        tmp_path,
        r"short_landmarks\.json: landmarks have 1 quantiles",
        in_file=in_file,
        landmarks_file=str(short),
    )
    broken = tmp_path / "broken_landmarks.json"
    broken.write_text("{not json")
    assert_fails_cleanly(
        HistogramMatch,
        tmp_path,
        r"broken_landmarks\.json: not a landmarks JSON",
        in_file=in_file,
        landmarks_file=str(broken),
    )


def test_skull_add_back_node(tmp_path):
    from bmex_wf.brainmask.synthetic_head import synthetic_head

    anat = shared_path("data", "test_BIDS", "sub-0006", "ses-V01", "anat")
    brain = nib.load(next(anat.glob("*.nii.gz"))).slicer[::3, ::3, ::3]
    head, mask = synthetic_head(brain, seed=2)
    head_file, mask_file = str(tmp_path / "head.nii.gz"), str(tmp_path / "mask.nii.gz")
    head.to_filename(head_file)
    mask.to_filename(mask_file)
    inside = np.asarray(mask.dataobj) > 0
    original = np.asarray(head.dataobj)
    enhanced = np.where(inside, 1000 * (original / original[inside].max()) ** 2, 0).astype(
        np.float32
    )
    enhanced_file = save(enhanced, tmp_path / "enhanced.nii.gz", head.affine, head.header)
    out = run_node(
        SkullAddBack, tmp_path, in_enhanced=enhanced_file, in_original=head_file, in_mask=mask_file
    )
    img = nib.load(out.out_file)
    data = np.asarray(img.dataobj)
    assert img.shape == head.shape and np.allclose(img.affine, head.affine)
    np.testing.assert_allclose(data[~inside], original[~inside], rtol=1e-6)
    assert abs(np.median(data[inside]) - np.median(original[inside])) < 0.01 * np.median(
        original[inside]
    )

    other_grid = save(enhanced[:-1], tmp_path / "other_grid.nii.gz", head.affine)
    assert_fails_cleanly(
        SkullAddBack,
        tmp_path,
        r"other_grid\.nii\.gz: grid",
        in_enhanced=other_grid,
        in_original=head_file,
        in_mask=mask_file,
    )


def test_quality_index_node(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(16, 16, 16)).astype(np.uint8)
    base = np.choose(labels, [0, 100, 400, 700]).astype(np.float32)
    noisy = base + rng.normal(0, 60, size=base.shape).astype(np.float32)
    clean = base + rng.normal(0, 20, size=base.shape).astype(np.float32)
    files = {
        name: save(arr, tmp_path / f"{name}.nii.gz")
        for name, arr in (("orig", noisy), ("enh", clean), ("dseg", labels))
    }
    out = run_node(
        QualityIndex,
        tmp_path,
        in_original=files["orig"],
        in_enhanced=files["enh"],
        in_dseg=files["dseg"],
    )
    assert out.tct_after > out.tct_before > 0
    assert out.qi == pytest.approx(out.tct_before / out.tct_after) and out.qi < 1
    report = json.loads(Path(out.out_report).read_text())
    assert report["qi"] == round(out.qi, 4)

    no_wm = save(np.where(labels == 3, 2, labels).astype(np.uint8), tmp_path / "no_wm.nii.gz")
    with pytest.warns(RuntimeWarning, match="no voxel labelled WM"):
        out = run_node(
            QualityIndex,
            tmp_path,
            name="nowm",
            in_original=files["orig"],
            in_enhanced=files["enh"],
            in_dseg=no_wm,
        )
    assert math.isnan(out.qi) and json.loads(Path(out.out_report).read_text())["qi"] is None


def _scores(shape=(10, 9, 8), seed=0):
    return np.random.default_rng(seed).normal(0, 2, size=(*shape, 4)).astype(np.float32)


def test_tissue_segmentation_node_4d(tmp_path):
    scores = _scores()
    affine = np.array([[0, -1.2, 0, 10], [1.2, 0, 0, -5], [0, 0, 1.2, 3], [0, 0, 0, 1]])
    in_file = save(scores, tmp_path / "sub-01_scores.nii.gz", affine)
    out = run_node(TissueSegmentation, tmp_path, in_scores=in_file)
    dseg = nib.load(out.out_dseg)
    assert dseg.shape == scores.shape[:3] and np.allclose(dseg.affine, affine)
    assert dseg.get_data_dtype() == np.uint8
    np.testing.assert_array_equal(np.asarray(dseg.dataobj), np.argmax(scores, axis=3))
    assert [p.split("_label-")[1] for p in out.out_probseg] == [
        f"{c}_probseg.nii.gz" for c in ("CSF", "GM", "WM")
    ]
    probs = np.stack([np.asarray(nib.load(p).dataobj) for p in out.out_probseg])
    exp = np.exp(scores.astype(np.float64))
    np.testing.assert_allclose(
        probs, np.moveaxis(exp / exp.sum(axis=3, keepdims=True), 3, 0)[1:], atol=1e-6
    )
    with open(out.out_label_table) as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert [r["abbreviation"] for r in rows] == ["BG", "CSF", "GM", "WM"]


def test_tissue_segmentation_node_four_files(tmp_path):
    scores = _scores(seed=1)
    files = [save(scores[..., k], tmp_path / f"class{k}.nii.gz") for k in range(4)]
    out = run_node(TissueSegmentation, tmp_path, in_score_files=files)
    np.testing.assert_array_equal(
        np.asarray(nib.load(out.out_dseg).dataobj), np.argmax(scores, axis=3)
    )


def test_tissue_segmentation_bad_inputs(tmp_path):
    three = save(_scores()[..., :3], tmp_path / "three.nii.gz")
    assert_fails_cleanly(
        TissueSegmentation,
        tmp_path,
        r"three\.nii\.gz: expected 4 class-score volumes",
        in_scores=three,
    )
    scores = _scores()
    scores[0, 0, 0, 2] = np.nan
    nan_file = save(scores, tmp_path / "nan_scores.nii.gz")
    assert_fails_cleanly(
        TissueSegmentation,
        tmp_path,
        r"nan_scores\.nii\.gz: class scores contain NaN",
        in_scores=nan_file,
    )
    text = tmp_path / "notes.nii.gz"
    text.write_text("not an image")
    assert_fails_cleanly(
        TissueSegmentation, tmp_path, r"notes\.nii\.gz: not a readable", in_scores=str(text)
    )
