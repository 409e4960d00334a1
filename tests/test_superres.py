"""Network-grid (``res-``) outputs: when they are written, their grid, their sidecars, the
native outputs left as they were, and the super-resolution reportlet."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from nibabel.affines import apply_affine, voxel_sizes
from nibabel.processing import resample_from_to
from scipy.stats import spearmanr

from bmex_wf.age import age_from_override
from bmex_wf.resolution import resolve_output_resolution
from bmex_wf.workflows.participant import ImageJob, init_image_wf

#: A thick-slice affine whose voxel axes point P, S and L (the thick axis last, along L).
THICK_AFFINE = np.array([[0.0, 0.0, -3.2, 10.0], [-0.8, 0.0, 0.0, -5.0],
                         [0.0, 0.8, 0.0, 3.0], [0.0, 0.0, 0.0, 1.0]])


def _thick_slice_image(bids_dir: Path, path: Path, size: int = 56) -> Path:
    """A ball of real brain (sub-0002, 0.8 mm), its slabs of 4 slices averaged: 0.8x0.8x3.2 mm,
    zero outside (so the brain mask is its non-zero voxels)."""
    img = nb.load(next((bids_dir / "sub-0002" / "ses-V01" / "anat").glob("*_T1w.nii.gz")))
    data = np.asanyarray(img.dataobj)
    centre = np.round(np.argwhere(data > 0).mean(axis=0)).astype(int)
    crop = data[tuple(slice(c - size // 2, c + size // 2) for c in centre)].astype(np.float32)
    radius = np.sqrt(((np.indices(crop.shape) - (size - 1) / 2) ** 2).sum(axis=0))
    crop *= radius < 0.4 * size
    thick = crop.reshape(size, size, size // 4, 4).mean(axis=-1)
    out = nb.Nifti1Image(thick.astype(np.int16), THICK_AFFINE)
    out.header.set_qform(THICK_AFFINE, 1)
    out.header.set_sform(THICK_AFFINE, 1)
    out.to_filename(path)
    return path


def _run_image(path: Path, out: Path, work: Path, models_dir: Path, **options) -> None:
    job = ImageJob(path=path, contrast="T1w", age=age_from_override("24"), subject="01")
    wf = init_image_wf(job=job, output_dir=out, models_dir=models_dir, reports=False,
                       name="image_wf", **options)
    wf.base_dir = str(work)
    wf.config["execution"].update({"crashdump_dir": str(work)})
    wf.run(plugin="Linear")


def _centre_and_extent(img) -> tuple[np.ndarray, np.ndarray]:
    """World centre of the voxel box and its extent (mm) along each voxel axis."""
    centre = apply_affine(img.affine, (np.asarray(img.shape[:3]) - 1) / 2)
    return centre, np.asarray(img.shape[:3]) * voxel_sizes(img.affine)


@pytest.fixture(scope="module")
def thick_runs(bids_dir, small_models, tmp_path_factory):
    """One thick-slice image run with the default options and, apart, with ``native``."""
    from .test_workflow import _StubEnhancer

    root = tmp_path_factory.mktemp("superres")
    path = _thick_slice_image(bids_dir, root / "sub-01_T1w.nii.gz")
    with pytest.MonkeyPatch.context() as patch:
        from bmex_wf import models

        patch.setattr(models, "load_network", lambda path, kind: _StubEnhancer())
        _run_image(path, root / "default", root / "work", small_models)
        _run_image(path, root / "native", root / "work-native", small_models,
                   output_resolution="native")
    return path, root / "default", root / "native"


def test_thick_input_gets_network_grid_outputs(thick_runs):
    path, out, _ = thick_runs
    original = nb.load(path)
    centre, extent = _centre_and_extent(original)
    unit = original.affine[:3, :3] / voxel_sizes(original.affine)
    for name in ("sub-01_res-0p8_desc-enhanced_T1w", "sub-01_res-0p8_desc-enhancedbrain_T1w",
                 "sub-01_space-T1w_res-0p8_desc-brain_mask", "sub-01_space-T1w_res-0p8_dseg",
                 "sub-01_space-T1w_res-0p8_label-GM_probseg"):
        img = nb.load(out / f"{name}.nii.gz")
        assert np.all(voxel_sizes(img.affine) <= 0.85), name
        np.testing.assert_allclose(img.affine[:3, :3] / voxel_sizes(img.affine), unit, atol=1e-5)
        grid_centre, grid_extent = _centre_and_extent(img)
        assert np.linalg.norm(grid_centre - centre) < 2.0, name
        assert np.all(np.abs(grid_extent - extent) < 4.0), name
        meta = json.loads((out / f"{name}.json").read_text())
        assert meta["Resolution"].startswith("0.8 mm isotropic"), name
        assert meta["AgeGroup"] == "Month24" and "QI" in meta
    dseg = np.asanyarray(nb.load(out / "sub-01_space-T1w_res-0p8_dseg.nii.gz").dataobj)
    mask = np.asanyarray(nb.load(out / "sub-01_space-T1w_res-0p8_desc-brain_mask.nii.gz").dataobj)
    assert set(np.unique(dseg)) <= {0, 1, 2, 3} and (dseg[mask > 0] > 0).mean() > 0.9
    # the enhanced brain (stand-in network: the network input) lies on the input's anatomy:
    # N4 and template matching change intensities, so its rank correlation with the input is
    # well above that of the same image moved by 2 voxels (1.6 mm) along any axis
    enhanced = nb.load(out / "sub-01_res-0p8_desc-enhancedbrain_T1w.nii.gz").get_fdata()
    upsampled = np.asanyarray(resample_from_to(original, (enhanced.shape, img.affine)).dataobj)
    inside = mask > 0
    aligned = spearmanr(upsampled[inside], enhanced[inside])[0]
    assert aligned > 0.75
    for axis in range(3):
        moved = np.roll(enhanced, 2, axis=axis)
        assert aligned > spearmanr(upsampled[inside], moved[inside])[0] + 0.1, axis


def test_native_outputs_are_unchanged(thick_runs):
    _, out, native = thick_runs
    default_files = sorted(p.name for p in out.iterdir() if "_res-" not in p.name)
    assert default_files == sorted(p.name for p in native.iterdir())
    assert not any("_res-" in name for name in default_files)
    for name in default_files:
        if name.endswith(".nii.gz"):
            a, b = nb.load(out / name), nb.load(native / name)
            assert a.shape == b.shape and np.array_equal(a.affine, b.affine), name
            assert np.array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)), name
        elif name.endswith(".json"):
            assert "Resolution" not in json.loads((out / name).read_text()), name
    # the volume table comes from the native grid: the network's row is identical; Atropos is
    # not bit-reproducible from one process to the next, so its rows agree to 1 %
    tsv = "sub-01_space-T1w_desc-volumes_morph.tsv"
    rows = [{line.split("\t")[0]: line.split("\t")[1:] for line in (folder / tsv).read_text().splitlines()}
            for folder in (out, native)]
    assert rows[0].keys() == rows[1].keys() and rows[0]["bmex"] == rows[1]["bmex"]
    for method in ("atropos_original", "atropos_enhanced"):
        np.testing.assert_allclose(np.float64(rows[0][method]), np.float64(rows[1][method]),
                                   rtol=0.01, err_msg=method)


def test_auto_picks_native_for_a_1mm_input(tmp_path, small_models):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    path = tmp_path / "sub-01_T1w.nii.gz"
    nb.Nifti1Image(np.ones((40, 40, 40), np.int16), affine).to_filename(path)
    job = ImageJob(path=path, contrast="T1w", age=age_from_override("24"), subject="01")
    wf = init_image_wf(job=job, output_dir=tmp_path / "out", models_dir=small_models)
    names = wf.list_node_names()
    assert "ds_outputs" in names and "ds_network_grid" not in names
    assert not any("network_grid_wf" in n or "superres" in n for n in names)
    assert resolve_output_resolution("auto", (1.0, 1.0, 1.02)) == "network"
    assert resolve_output_resolution("network", (1.0, 1.0, 1.0)) == "network"
    with pytest.raises(ValueError, match="output resolution"):
        resolve_output_resolution("high", (1.0, 1.0, 1.0))


def test_thick_input_is_registered_and_reported_from_the_network_grid(tmp_path, small_models,
                                                                       local_tf):
    from bmex_wf.spaces.templateflow import OutputSpace

    from .templateflow_local import TEMPLATE

    path = tmp_path / "sub-01_T1w.nii.gz"
    nb.Nifti1Image(np.ones((40, 40, 12), np.int16), THICK_AFFINE).to_filename(path)
    job = ImageJob(path=path, contrast="T1w", age=age_from_override("23"), subject="01")
    wf = init_image_wf(job=job, output_dir=tmp_path / "out", models_dir=small_models,
                       output_spaces=[OutputSpace(TEMPLATE)])
    edges = {(u.name, v.name): d["connect"] for u, v, d in wf._graph.edges(data=True)}
    reg = next(key for key in edges if key[1].startswith("reg_"))
    assert ("outputnode.enhanced_brain_network", "inputnode.enhanced_brain") in edges[reg]
    assert ("outputnode.enhanced_network", "inputnode.enhanced_network") in edges[
        ("bmex_wf", "report_wf")]
    space_sink = wf.get_node(f"ds_{reg[1]}")
    assert "network grid" in space_sink.inputs.metadata["RegisteredFrom"]
    assert wf.get_node("ds_network_grid").inputs.voxel_mm == 0.8
    assert wf.get_node("report_wf.ds_superres").inputs.desc == "superresolution"


def test_superresolution_reportlet_cuts_across_the_thick_slices(tmp_path):
    from bmex_wf.interfaces.reportlets import SuperResolutionRPT
    from bmex_wf.reports.superres import superres_cuts

    rng = np.random.default_rng(0)
    thick = nb.Nifti1Image(rng.random((20, 20, 5)).astype(np.float32) + 1, THICK_AFFINE)
    grid_affine = THICK_AFFINE.copy()
    grid_affine[:3, 2] /= 4
    fine = nb.Nifti1Image(rng.random((20, 20, 20)).astype(np.float32) + 1, grid_affine)
    before, after, axis = superres_cuts(thick, fine)
    assert axis == 1  # the thick axis points L: coronal cuts contain it
    cut = before[1]  # RAS+ cut: axis 0 is R-L, the thick one, in blocks of 4 equal rows
    assert cut.shape == after[1].shape == (20, 20)
    steps = np.abs(np.diff(cut, axis=0)).max(axis=1) > 0
    assert 3 <= steps.sum() <= 5 and not np.array_equal(cut, after[1])
    thick.to_filename(tmp_path / "thick.nii.gz")
    fine.to_filename(tmp_path / "fine.nii.gz")
    rpt = SuperResolutionRPT(in_file=str(tmp_path / "thick.nii.gz"),
                             in_enhanced=str(tmp_path / "fine.nii.gz"))
    result = rpt.run(cwd=str(tmp_path))
    text = Path(result.outputs.out_report).read_text()
    assert text.lstrip().startswith("<?xml") and "0.8 mm network grid" in text
