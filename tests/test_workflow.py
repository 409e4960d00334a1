"""init_bmex_wf: construction, geometry round trip, outputs, caching."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import nibabel as nb
import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from .helpers import rotation


class _StubEnhancer(torch.nn.Module):
    """Returns its input as recon and intensity-band class scores (local, exact)."""

    width = 8

    def forward(self, x):
        bands = torch.stack([(x <= 1), (x > 1) & (x < 300), (x >= 300) & (x < 600), x >= 600], 1)
        return bands[:, :, 0].float() * 10.0, x


@pytest.fixture
def stub_network(monkeypatch):
    from bmex_wf import models

    monkeypatch.setattr(models, "load_network", lambda path, kind: _StubEnhancer())


def _brain_crop(bids_dir, size=56, step=2):
    """A downsampled central crop of a real shared brain, as (data, zooms)."""
    img = nb.load(next((bids_dir / "sub-0002" / "ses-V01" / "anat").glob("*_T1w.nii.gz")))
    data = np.asanyarray(img.dataobj)
    c = np.array(data.shape) // 2
    half = size * step // 2
    crop = data[c[0] - half:c[0] + half:step, c[1] - half:c[1] + half:step,
                c[2] - half:c[2] + half:step].astype("float32")
    return crop, np.array(img.header.get_zooms()[:3]) * step


def _write_case(path, data, zooms, orientation):
    """Write ``data`` with an RAS/LPS/oblique/anisotropic affine."""
    affine = np.eye(4)
    if orientation == "LPS":
        affine[:3, :3] = np.diag([-1, -1, 1]) * zooms
    elif orientation == "oblique":
        affine[:3, :3] = rotation(26, 0)[:3, :3] @ np.diag(zooms)
    elif orientation == "aniso":
        data = data[:, :, ::3]
        affine[:3, :3] = np.diag([zooms[0], zooms[1], zooms[2] * 3])
    else:
        affine[:3, :3] = np.diag(zooms)
    affine[:3, 3] = -affine[:3, :3] @ (np.array(data.shape) / 2)
    img = nb.Nifti1Image(data.astype("uint16"), affine)
    img.header.set_qform(affine, 1)
    img.header.set_sform(affine, 2)
    img.to_filename(path)
    return path


def _run(wf, base_dir):
    """Run ``wf``; return its outputnode values (identity nodes leave the run graph)."""
    wf.base_dir = str(base_dir)
    wf.config["execution"].update({"crashdump_dir": str(base_dir), "remove_unnecessary_outputs": False})
    ran = {node.name: node for node in wf.run(plugin="Linear").nodes()}
    outputnode = wf.get_node("outputnode")
    values = {name: getattr(outputnode.inputs, name) for name in outputnode.inputs.copyable_trait_names()}
    for source, _, data in wf._graph.in_edges(outputnode, data=True):
        for src_field, dst_field in data["connect"]:
            node, field = _producer(source, src_field)
            values[dst_field] = getattr(ran[node.name].result.outputs, field)
    return SimpleNamespace(**values)


def _producer(node, field):
    """The node (and its output) behind ``field`` of ``node``, through sub-workflow outputnodes."""
    from nipype.pipeline.engine import Workflow

    if not isinstance(node, Workflow):
        return node, field
    inner_name, _, inner_field = field.partition(".")
    inner = node.get_node(inner_name)
    for source, _, data in node._graph.in_edges(inner, data=True):
        for src_field, dst_field in data["connect"]:
            if dst_field == inner_field:
                return _producer(source, src_field)
    raise KeyError(field)


@pytest.mark.parametrize("orientation", ["RAS", "LPS", "oblique", "aniso"])
def test_geometry_round_trip_with_identity_network(orientation, bids_dir, small_models, tmp_path,
                                                   stub_network):
    from bmex_wf.workflows.base import init_bmex_wf

    data, zooms = _brain_crop(bids_dir)
    in_file = _write_case(tmp_path / f"sub-01_{orientation}_T1w.nii.gz", data, zooms, orientation)
    # N4 legitimately changes intensities (tested on its own): off for a pure geometry check
    wf = init_bmex_wf(age_months=23, contrast="T1w", models_dir=str(small_models),
                      mask_source="nonzero", bias_correction=False)
    wf.inputs.inputnode.in_file = str(in_file)
    out = _run(wf, tmp_path / "work")
    original = nb.load(in_file)
    inside = np.asanyarray(original.dataobj) > 0
    for field in ("enhanced", "enhanced_brain", "brain_mask", "dseg"):
        img = nb.load(getattr(out, field))
        assert img.shape == original.shape, field
        np.testing.assert_allclose(img.affine, original.affine, atol=1e-6)
        assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 2
    # Histogram matching to the template is monotone but not linear: rank correlation
    # checks the geometry. A mirrored input would fail it (negative control).
    source = original.get_fdata()
    for field in ("enhanced_brain", "enhanced"):
        enhanced = nb.load(getattr(out, field)).get_fdata()
        r = spearmanr(enhanced[inside], source[inside])[0]
        assert r >= 0.99, f"{orientation} {field}: rank correlation {r:.4f}"
    mirrored = source[::-1]
    assert spearmanr(enhanced[inside], mirrored[inside])[0] < 0.9
    assert len(out.probsegs) == 3
    probs = np.stack([nb.load(p).get_fdata() for p in out.probsegs])
    assert probs.min() >= 0 and probs.max() <= 1
    qc = json.loads(Path(out.qc).read_text())
    assert qc["AgeGroup"] == "Month24" and qc["MaskSource"] == "nonzero"
    assert qc["Model"]["sha256"] and qc["Tiling"] == "fast"
    assert qc["TileGeometry"]["uncovered_brain_voxels"] == 0 and qc["TileGeometry"]["tiles"] >= 1


def test_fetal_workflow_uses_fetal_model_and_grid(small_models):
    from bmex_wf.workflows.base import init_bmex_wf

    wf = init_bmex_wf(age_months=-3, contrast="T2w", models_dir=str(small_models))
    assert wf.get_node("outputnode").inputs.age_group == "Fetal"
    assert wf.get_node("preproc_wf.to_grid").inputs.spacing == 0.75
    assert wf.get_node("enhance_wf.enhance").inputs.model_file.endswith("BMEX-Fetal-T2-model.pt")
    assert wf.get_node("preproc_wf.match_template").inputs.template == "Template-Fetal-T2w"
    assert "BME-X [@bmex]" in wf.visit_desc()


def test_missing_model_fails_at_build_time(small_models):
    from bmex_wf.workflows.base import init_bmex_wf

    with pytest.raises(FileNotFoundError, match="BMEX-Month9-T2-model.pt"):
        init_bmex_wf(age_months=8, contrast="T2w", models_dir=str(small_models))


@pytest.mark.parametrize("kwargs, message", [
    ({"contrast": "FLAIR"}, "unknown contrast"),
    ({"contrast": "T1w", "age_months": 5000}, "out of range"),
    ({"contrast": "T1w", "mask_source": "bet"}, "brain-mask source"),
])
def test_bad_arguments(kwargs, message, small_models):
    from bmex_wf.workflows.base import init_bmex_wf

    kwargs = {"age_months": 23, **kwargs}
    with pytest.raises(ValueError, match=message):
        init_bmex_wf(models_dir=str(small_models), **kwargs)


def test_rerun_hits_cache_even_with_other_threads(bids_dir, small_models, tmp_path):
    from bmex_wf.workflows.base import init_bmex_wf

    data, zooms = _brain_crop(bids_dir, size=40, step=3)
    in_file = _write_case(tmp_path / "sub-01_T1w.nii.gz", data, zooms, "oblique")
    work = tmp_path / "work"

    def run(threads):
        wf = init_bmex_wf(age_months=30, contrast="T1w", models_dir=str(small_models),
                          mask_source="nonzero", omp_nthreads=threads)
        wf.inputs.inputnode.in_file = str(in_file)
        _run(wf, work)
        return {p: p.stat().st_mtime_ns for p in work.rglob("result_*.pklz")}

    first = run(1)
    assert len(first) >= 20
    second = run(2)
    assert second == first, "a node was recomputed"
