"""The Enhance and WriteQC interfaces in Nipype nodes."""

import json
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest
from nipype.pipeline import engine as pe

from bmex_wf.interfaces.enhance import Enhance
from bmex_wf.interfaces.qc import WriteQC
from bmex_wf.models import build_network, save_network
from bmex_wf.models.geometry import default_geometry
from bmex_wf.testing.rule_weights import apply_rule_weights
from bmex_wf.workflows.enhance import init_bmex_enhance_wf


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "BMEX-Month24-T1-model.pt"
    return save_network(apply_rule_weights(build_network("enhance", 8)), path)


@pytest.fixture
def brain_crop(bids_dir, tmp_path):
    img = nb.load(next((bids_dir / "sub-0002" / "ses-V01" / "anat").glob("*_T1w.nii.gz")))
    data = np.asanyarray(img.dataobj)[110:158, 120:160, 120:176].astype("float32")
    mask = (data > 0).astype("uint8")
    affine = img.affine.copy()
    crop = tmp_path / "crop.nii.gz"
    nb.Nifti1Image(data, affine).to_filename(crop)
    mask_file = tmp_path / "crop_mask.nii.gz"
    nb.Nifti1Image(mask, affine).to_filename(mask_file)
    return crop, mask_file


def test_enhance_node_outputs_on_input_grid(brain_crop, small_model, tmp_path):
    crop, mask = brain_crop
    node = pe.Node(Enhance(in_file=str(crop), in_mask=str(mask), model_file=str(small_model),
                           precision="fp32"), name="enhance", base_dir=str(tmp_path))
    out = node.run().outputs
    src = nb.load(crop)
    recon, scores = nb.load(out.out_file), nb.load(out.out_scores)
    assert recon.shape == src.shape and scores.shape == (*src.shape, 4)
    np.testing.assert_allclose(recon.affine, src.affine)
    assert out.device == "cpu" and out.precision == "fp32" and out.seconds > 0
    assert out.geometry["geometry"] == default_geometry("cpu").name
    assert out.geometry["uncovered_brain_voxels"] == 0 and out.geometry["tiles"] >= 1
    assert out.geometry["work_ratio"] > 1
    inside = nb.load(mask).get_fdata() > 0
    assert np.isfinite(recon.get_fdata()).all() and recon.get_fdata()[inside].std() > 0


def test_enhance_hash_ignores_resource_inputs(brain_crop, small_model):
    crop, _ = brain_crop
    a = Enhance(in_file=str(crop), model_file=str(small_model), num_threads=1, use_gpu=False)
    b = Enhance(in_file=str(crop), model_file=str(small_model), num_threads=2, use_gpu=True)
    assert a.inputs.get_hashval()[1] == b.inputs.get_hashval()[1]
    c = Enhance(in_file=str(crop), model_file=str(small_model), tiling="upstream")
    assert a.inputs.get_hashval()[1] != c.inputs.get_hashval()[1]
    d = Enhance(in_file=str(crop), model_file=str(small_model), geometry=default_geometry("gpu").name)
    assert a.inputs.get_hashval()[1] != d.inputs.get_hashval()[1]


@pytest.mark.parametrize("use_gpu", [False, True])
def test_enhance_workflow_hashes_the_device_kinds_geometry(small_model, use_gpu):
    wf = init_bmex_enhance_wf(model_file=str(small_model), builtin=False, group="Month24",
                              contrast="T1w", use_gpu=use_gpu)
    node = wf.get_node("enhance")
    assert node.inputs.geometry == default_geometry("gpu" if use_gpu else "cpu").name


def test_write_qc_records_provenance(brain_crop, small_model, tmp_path):
    crop, _ = brain_crop
    node = pe.Node(WriteQC(in_file=str(crop), model_file=str(small_model), builtin=False,
                           template="Template-Month24-T1w", contrast="T1w", age_months=23,
                           age_source="scans.tsv", age_group="Month24", mask_source="nonzero",
                           qi=0.8, tct_before=1.2, tct_after=float("nan"), device="cpu",
                           precision="bf16", tiling="fast", enhance_seconds=3.21,
                           geometry={"geometry": "columns-40-m5-d2", "tiles": 30}),
                   name="qc", base_dir=str(tmp_path))
    record = json.loads(Path(node.run().outputs.out_file).read_text())
    assert record["QI"] == 0.8 and record["TCTAfter"] is None
    assert record["Model"]["path"] == str(small_model) and len(record["Model"]["sha256"]) == 64
    assert record["Software"]["bmex-wf"] and record["Software"]["torch"]
    assert record["AgeSource"] == "scans.tsv" and record["Timings"]["EnhanceSeconds"] == 3.21
    assert record["TileGeometry"] == {"geometry": "columns-40-m5-d2", "tiles": 30}
