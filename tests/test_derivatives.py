"""Derivatives naming, sidecars, dataset files, atomic and race-free writes, pybids parsing."""

from __future__ import annotations

import gzip
import json
import multiprocessing as mp
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from bmex_wf.bids import derivatives as deriv
from bmex_wf.interfaces.bids import BMEXDerivativesSink


def _nifti(path: Path, value=1.0, dtype="float32") -> Path:
    data = np.full((4, 5, 6), value, dtype=dtype)
    nb.Nifti1Image(data, np.diag([0.8, 0.8, 0.8, 1])).to_filename(path)
    return path


def _raw_dataset(tmp_path: Path, names) -> Path:
    root = tmp_path / "raw"
    (root / "sub-01/ses-1/anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "raw", "BIDSVersion": "1.9.0"}')
    for name in names:
        _nifti(root / "sub-01/ses-1/anat" / name)
    return root


def _workflow_outputs(folder: Path, tag: str) -> dict:
    folder.mkdir(parents=True, exist_ok=True)
    files = {key: _nifti(folder / f"{tag}_{key}.nii.gz", value=i + 1)
             for i, key in enumerate(deriv.OUTPUT_KEYS)}
    files["dseg"] = _nifti(folder / f"{tag}_dseg.nii", value=2, dtype="uint8")  # uncompressed
    return files


def test_names_follow_the_convention():
    names = deriv.derivative_names("sub-01_ses-1_acq-mp_run-2_T1w.nii.gz", "T1w")
    src = "sub-01_ses-1_acq-mp_run-2"
    assert names == {
        "enhanced": f"{src}_desc-enhanced_T1w.nii.gz",
        "enhanced_brain": f"{src}_desc-enhancedbrain_T1w.nii.gz",
        "brain_mask": f"{src}_space-T1w_desc-brain_mask.nii.gz",
        "dseg": f"{src}_space-T1w_dseg.nii.gz",
        "probseg_CSF": f"{src}_space-T1w_label-CSF_probseg.nii.gz",
        "probseg_GM": f"{src}_space-T1w_label-GM_probseg.nii.gz",
        "probseg_WM": f"{src}_space-T1w_label-WM_probseg.nii.gz",
    }


def test_network_grid_names_add_res_in_entity_order():
    names = deriv.derivative_names("sub-01_ses-1_run-2_T1w.nii.gz", "T1w", 0.8)
    src = "sub-01_ses-1_run-2"
    assert names["enhanced"] == f"{src}_res-0p8_desc-enhanced_T1w.nii.gz"
    assert names["enhanced_brain"] == f"{src}_res-0p8_desc-enhancedbrain_T1w.nii.gz"
    assert names["brain_mask"] == f"{src}_space-T1w_res-0p8_desc-brain_mask.nii.gz"
    assert names["dseg"] == f"{src}_space-T1w_res-0p8_dseg.nii.gz"
    assert names["probseg_WM"] == f"{src}_space-T1w_res-0p8_label-WM_probseg.nii.gz"
    fetal = deriv.derivative_names("sub-01_T2w.nii.gz", "T2w", 0.75)
    assert fetal["dseg"] == "sub-01_space-T2w_res-0p75_dseg.nii.gz"
    assert set(names.values()).isdisjoint(deriv.derivative_names(f"{src}_T1w.nii.gz", "T1w").values())


def test_network_grid_sidecars_carry_the_resolution(tmp_path):
    from bids.layout import parse_file_entities

    out = tmp_path / "out"
    written = deriv.write_image_outputs(output_dir=out, source_file=tmp_path / "sub-01_T1w.nii.gz",
                                        contrast="T1w", files=_workflow_outputs(tmp_path / "wf", "a"),
                                        voxel_mm=0.8)
    sidecars = {p.name: json.loads(p.read_text()) for p in written if p.suffix == ".json"}
    assert len(sidecars) == len(deriv.OUTPUT_KEYS)
    assert all(m["Resolution"].startswith("0.8 mm isotropic") for m in sidecars.values())
    assert "linear interpolation" in sidecars["sub-01_res-0p8_desc-enhanced_T1w.json"]["Interpolation"]
    assert sidecars["sub-01_space-T1w_res-0p8_dseg.json"]["Interpolation"].startswith("None")
    assert parse_file_entities(str(out / "sub-01_space-T1w_res-0p8_dseg.nii.gz"))["res"] == "0p8"
    native = deriv.write_image_outputs(output_dir=tmp_path / "native", contrast="T1w",
                                       source_file=tmp_path / "sub-01_T1w.nii.gz",
                                       files=_workflow_outputs(tmp_path / "wf", "a"))
    assert not any("Resolution" in json.loads(p.read_text()) for p in native if p.suffix == ".json")


def test_two_contrasts_and_two_runs_do_not_collide(tmp_path):
    sources = ["sub-01_ses-1_run-1_T1w.nii.gz", "sub-01_ses-1_run-2_T1w.nii.gz",
               "sub-01_ses-1_run-1_T2w.nii.gz", "sub-01_ses-1_run-2_T2w.nii.gz"]
    raw = _raw_dataset(tmp_path, sources)
    out = tmp_path / "out"
    written = []
    for i, name in enumerate(sources):
        contrast = name[-10:-7]
        written += deriv.write_image_outputs(
            output_dir=out, source_file=raw / "sub-01/ses-1/anat" / name, contrast=contrast,
            files=_workflow_outputs(tmp_path / f"wf{i}", f"i{i}"), bids_dir=raw)
    assert len(written) == len(set(written)) == 4 * 2 * len(deriv.OUTPUT_KEYS)
    assert all(p.parent == out / "sub-01/ses-1/anat" for p in written)
    assert not [p for p in (out / "sub-01/ses-1/anat").iterdir() if p.name.startswith(".")]


def test_sidecars_and_gzip(tmp_path):
    raw = _raw_dataset(tmp_path, ["sub-01_ses-1_T2w.nii.gz"])
    out = tmp_path / "out"
    meta = {"QI": 1.2345, "AgeMonths": 3.0, "Model": "BMEX-Month3-T2-model.pt"}
    deriv.write_image_outputs(output_dir=out, source_file=raw / "sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz",
                              contrast="T2w", files=_workflow_outputs(tmp_path / "wf", "a"),
                              metadata=meta, bids_dir=raw)
    anat = out / "sub-01/ses-1/anat"
    side = json.loads((anat / "sub-01_ses-1_desc-enhanced_T2w.json").read_text())
    assert side["Sources"] == ["bids:raw:sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz",
                               "bids::sub-01/ses-1/anat/sub-01_ses-1_space-T2w_desc-brain_mask.nii.gz"]
    assert side["SpatialReference"] == "bids:raw:sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz"
    assert side["SkullStripped"] is False and side["QI"] == 1.2345 and side["AgeMonths"] == 3.0
    brain = json.loads((anat / "sub-01_ses-1_desc-enhancedbrain_T2w.json").read_text())
    assert brain["SkullStripped"] is True
    mask = json.loads((anat / "sub-01_ses-1_space-T2w_desc-brain_mask.json").read_text())
    assert mask["Type"] == "Brain" and len(mask["Sources"]) == 1
    assert json.loads((anat / "sub-01_ses-1_space-T2w_label-GM_probseg.json").read_text())["Label"] == "GM"
    dseg = anat / "sub-01_ses-1_space-T2w_dseg.nii.gz"
    with gzip.open(dseg) as handle:  # the .nii workflow output was compressed on the way
        handle.read(10)
    assert np.asarray(nb.load(dseg).dataobj).dtype == np.uint8
    assert np.all(nb.load(dseg).get_fdata() == 2)


def test_missing_output_is_an_error(tmp_path):
    files = _workflow_outputs(tmp_path / "wf", "a")
    del files["dseg"]
    with pytest.raises(ValueError, match="dseg"):
        deriv.write_image_outputs(output_dir=tmp_path / "out", source_file=tmp_path / "x_T1w.nii.gz",
                                  contrast="T1w", files=files)


def test_atomic_write_leaves_nothing_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "d" / "file.json"
    deriv.atomic_write_json(target, {"a": 1})

    def broken(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(deriv.os, "replace", broken)
    with pytest.raises(OSError):
        deriv.atomic_write_json(target, {"a": 2})
    with pytest.raises(OSError):
        deriv.atomic_copy(_nifti(tmp_path / "x.nii"), tmp_path / "d" / "y.nii.gz")
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == ["file.json"]
    assert json.loads(target.read_text()) == {"a": 1}


def _race(args):
    path, text = args
    return deriv.write_once(path, text)


def test_write_once_is_race_free(tmp_path):
    target = tmp_path / "dataset_description.json"
    texts = [json.dumps({"writer": i, "pad": "x" * 100000}) for i in range(8)]
    with mp.get_context("spawn").Pool(4) as pool:
        created = pool.map(_race, [(target, t) for t in texts])
    assert sum(created) == 1
    assert target.read_text() in texts  # one writer's complete content
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_dataset_files(tmp_path):
    raw = _raw_dataset(tmp_path, [])
    out = tmp_path / "out"
    deriv.write_dataset_files(out, raw)
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative"
    assert desc["GeneratedBy"][0]["Name"] == "bmex-wf" and desc["GeneratedBy"][0]["CodeURL"]
    assert desc["SourceDatasets"] == [{"URL": raw.as_uri()}]
    assert "logs/" in (out / ".bidsignore").read_text()
    assert (out / "dseg.tsv").read_text().splitlines() == ["index\tname", "1\tCSF", "2\tGM", "3\tWM"]
    deriv.write_citation(out, "Text [@nipype1].", "@article{nipype1}")
    assert (out / "logs/CITATION.md").read_text() == "Text [@nipype1].\n"
    assert not deriv.write_once(out / "logs/CITATION.md", "other")
    (tmp_path / "notderiv").mkdir()
    (tmp_path / "notderiv/dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    with pytest.raises(ValueError, match="not a derivative"):
        deriv.write_dataset_files(tmp_path / "notderiv", raw)


def test_sink_interface_and_pybids_parsing(tmp_path, monkeypatch):
    from bids import BIDSLayout

    raw = _raw_dataset(tmp_path, ["sub-01_ses-1_run-1_T1w.nii.gz", "sub-01_ses-1_run-1_T2w.nii.gz"])
    out = tmp_path / "out"
    deriv.write_dataset_files(out, raw)
    qc = tmp_path / "qc.json"
    qc.write_text(json.dumps({"QI": 1.5, "tct_before": 1.0}))
    for contrast in ("T1w", "T2w"):
        files = _workflow_outputs(tmp_path / contrast, contrast)
        sink = BMEXDerivativesSink(
            output_dir=str(out), bids_dir=str(raw), contrast=contrast,
            source_file=str(raw / f"sub-01/ses-1/anat/sub-01_ses-1_run-1_{contrast}.nii.gz"),
            enhanced=str(files["enhanced"]), enhanced_brain=str(files["enhanced_brain"]),
            brain_mask=str(files["brain_mask"]), dseg=str(files["dseg"]),
            probsegs=[str(files[f"probseg_{t}"]) for t in ("CSF", "GM", "WM")],
            qi=1.23456, age_group="Month24", model_file="BMEX-Month24-T1-model.pt", qc=str(qc),
            metadata={"AgeMonths": 72.0})
        cwd = tmp_path / f"node_{contrast}"
        cwd.mkdir()
        monkeypatch.chdir(cwd)
        result = sink.run()
        assert len(result.outputs.out_files) == 2 * len(deriv.OUTPUT_KEYS)
    layout = BIDSLayout(str(raw), derivatives=str(out), validate=False)
    dlay = layout.derivatives["bmex-wf"]
    assert len(dlay.get(subject="01", desc="enhanced", extension=".nii.gz")) == 2
    assert len(dlay.get(subject="01", desc="enhancedbrain", suffix="T2w", extension=".nii.gz")) == 1
    assert len(dlay.get(suffix="probseg", label="GM", extension=".nii.gz")) == 2
    mask = dlay.get(suffix="mask", desc="brain", space="T1w", extension=".nii.gz")
    assert len(mask) == 1 and mask[0].get_metadata()["QI"] == 1.2346
    assert dlay.get(suffix="dseg", extension=".nii.gz", space="T2w")[0].get_metadata()["BMEX"]["tct_before"] == 1.0
