"""``--output-spaces``: CLI, config.toml, registration workflow, participant graph, sinks."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from bmex_wf.cli import parser as cli_parser
from bmex_wf.cli import workflow as cli_workflow
from bmex_wf.cli.config import RunConfig
from bmex_wf.cli.parser import parse_args
from bmex_wf.spaces.templateflow import OutputSpace

from .templateflow_local import TEMPLATE, build_templateflow_home, use_templateflow_home


def _bids(tmp_path) -> Path:
    root = tmp_path / "bids"
    (root / "sub-01" / "anat").mkdir(parents=True)
    nb.Nifti1Image(np.ones((4, 4, 4), "int16"), np.eye(4)).to_filename(
        root / "sub-01" / "anat" / "sub-01_T1w.nii.gz")
    (root / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    return root


# --------------------------------------------------------------------------- CLI and config
def test_parser_output_spaces_and_config_round_trip(tmp_path):
    bids = _bids(tmp_path)
    base = [str(bids), str(tmp_path / "out"), "participant", "--device", "cpu"]
    assert parse_args(base).output_spaces == []
    opts = parse_args([*base, "--output-spaces", "MNIInfant", "UNCInfant:cohort-2",
                       "MNI152NLin2009cAsym:res-2"])
    assert opts.output_spaces == [OutputSpace("MNIInfant"), OutputSpace("UNCInfant", "2"),
                                  OutputSpace("MNI152NLin2009cAsym", None, 2)]
    cfg = cli_parser.build_config(opts)
    assert cfg.output_spaces == ["MNIInfant", "UNCInfant:cohort-2", "MNI152NLin2009cAsym:res-2"]
    path = cfg.write(tmp_path / "config.toml")
    import toml

    assert toml.loads(path.read_text())["workflow"]["output_spaces"] == cfg.output_spaces
    assert RunConfig.load(path).output_spaces == cfg.output_spaces
    reloaded = parse_args([*base, "--config-file", str(path)])
    assert reloaded.output_spaces == opts.output_spaces


def test_enhance_parser_output_spaces(tmp_path):
    from bmex_wf.cli.parser import parse_enhance_args

    image = _bids(tmp_path) / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    opts = parse_enhance_args([str(image), str(tmp_path / "out"), "--age-months", "30",
                               "--output-spaces", "MNIInfant", "MNI152NLin6Asym:res-2"])
    assert opts.output_spaces == [OutputSpace("MNIInfant"), OutputSpace("MNI152NLin6Asym",
                                                                        None, 2)]
    assert parse_enhance_args([str(image), str(tmp_path / "o"), "--age-months", "3"]
                              ).output_spaces is None


@pytest.mark.parametrize("value, message", [
    ("MNIInfant:cohort-99", "no cohort 99"),
    ("NotATemplate", "unknown TemplateFlow template"),
    ("MNI152NLin2009cAsym:res-x", "not a number"),
])
def test_parser_rejects_bad_spaces(tmp_path, capsys, value, message):
    bids = _bids(tmp_path)
    with pytest.raises(SystemExit):
        parse_args([str(bids), str(tmp_path / "out"), "participant", "--output-spaces", value])
    assert message in capsys.readouterr().err


# --------------------------------------------------------------------------- registration wf
def _small_case(bids_dir, folder: Path) -> dict[str, str]:
    """A real brain at 2.4 mm with its mask and an intensity-band dseg, as files."""
    img = nb.load(bids_dir / "sub-0001" / "ses-V01" / "anat" / "sub-0001_ses-V01_T1w.nii.gz")
    small = img.slicer[::3, ::3, ::3]
    data = np.asanyarray(small.dataobj).astype(np.float32)
    inside = data > 0
    dseg = np.digitize(data, np.percentile(data[inside], [20, 55])) + 1
    files = {}
    for name, array, dtype in (("brain", data, np.float32), ("mask", inside, np.uint8),
                               ("dseg", np.where(inside, dseg, 0), np.uint8)):
        files[name] = str(folder / f"{name}.nii.gz")
        nb.Nifti1Image(array.astype(dtype), small.affine).to_filename(files[name])
    return files


def test_registration_workflow_runs(local_tf, bids_dir, tmp_path):
    from bmex_wf.workflows.registration import init_registration_wf

    case = _small_case(bids_dir, tmp_path)
    wf = init_registration_wf(space=OutputSpace(TEMPLATE), contrast="T1w", transform="Affine",
                              iterations="quick", spacing_mm=6)
    assert "[@ants]" in wf.visit_desc() and "[@templateflow]" in wf.visit_desc()
    assert "[@mni152nlin2009]" in wf.visit_desc()
    wf.inputs.inputnode.enhanced = case["brain"]
    wf.inputs.inputnode.enhanced_brain = case["brain"]
    wf.inputs.inputnode.brain_mask = case["mask"]
    wf.inputs.inputnode.dseg = case["dseg"]
    wf.base_dir = str(tmp_path / "work")
    nodes = {node.name: node for node in wf.run(plugin="Linear").nodes()}
    template = nb.load(local_tf / f"tpl-{TEMPLATE}" / f"tpl-{TEMPLATE}_res-1_T1w.nii.gz")
    enhanced = nb.load(nodes["warp_enhanced"].result.outputs.out_file)
    dseg = nb.load(nodes["warp_dseg"].result.outputs.out_file)
    for img in (enhanced, dseg):
        assert img.shape == template.shape and np.allclose(img.affine, template.affine)
    labels = np.asanyarray(dseg.dataobj)
    assert dseg.get_data_dtype() == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 3}
    # the warped tissue labels cover the template's brain (affine, 6 mm: Dice ~0.87)
    mask = np.asanyarray(nb.load(local_tf / f"tpl-{TEMPLATE}" /
                                 f"tpl-{TEMPLATE}_res-1_desc-brain_mask.nii.gz").dataobj) > 0
    brain = labels > 0
    assert 2 * (mask & brain).sum() / (mask.sum() + brain.sum()) > 0.8
    outputs = nodes["register"].result.outputs
    assert outputs.forward_transform.endswith("Composite.h5")
    assert outputs.inverse_transform.endswith("InverseComposite.h5")
    svg = Path(nodes["report"].result.outputs.out_report).read_text()
    assert svg.count("<svg") >= 1 and "<image" in svg
    _report_shows_registration(nodes["report"].result.outputs.out_report, tmp_path)


def _report_shows_registration(svg: str, tmp_path: Path) -> None:
    """The reportlet, named by the figures sink (with a cohort), joins the subject report."""
    from bmex_wf.interfaces.figures_sink import FiguresSink
    from bmex_wf.reports import generate_subject_report

    source = tmp_path / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz"
    source.parent.mkdir(parents=True)
    nb.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)).to_filename(source)
    out = tmp_path / "out"
    sink = FiguresSink(output_dir=str(out), source_file=str(source), in_file=svg,
                       datatype="figures", space="MNIInfant", cohort="3", desc="registration")
    (tmp_path / "sink").mkdir()
    figure = Path(sink.run(cwd=str(tmp_path / "sink")).outputs.out_file)
    assert figure == (out / "sub-01" / "figures" /
                      "sub-01_space-MNIInfant_cohort-3_desc-registration_T1w.svg")
    page = generate_subject_report(out, "01").read_text()
    assert "Registration to a standard space" in page and figure.name in page
    assert "MNIInfant template" in page


# --------------------------------------------------------------------------- participant graph
def _job(bids_dir, sub, contrast, months, fetal=False):
    from bmex_wf.age import AgeInfo
    from bmex_wf.workflows.participant import ImageJob

    path = bids_dir / sub / "ses-V01" / "anat" / f"{sub}_ses-V01_{contrast}.nii.gz"
    return ImageJob(path=path, contrast=contrast, subject=sub[4:], session="V01",
                    age=AgeInfo(months=months, source="test", fetal=fetal))


def _node_names(workflow) -> set[str]:
    """Dotted names of every node below ``workflow`` (its own name left out)."""
    return set(workflow.list_node_names())


def test_participant_graph_with_output_space(local_tf, bids_dir, small_models, tmp_path,
                                             caplog):
    from bmex_wf.workflows.participant import init_participant_wf

    caplog.set_level(logging.INFO, logger="bmex_wf.templates")
    jobs = [_job(bids_dir, "sub-0002", "T1w", 23), _job(bids_dir, "sub-0009", "T2w", -3.5,
                                                         fetal=True)]
    wf = init_participant_wf(subject="0002", jobs=jobs, output_dir=tmp_path / "out",
                             bids_dir=bids_dir, models_dir=small_models,
                             output_spaces=[OutputSpace(TEMPLATE)],
                             registration={"transform": "Affine", "iterations": "quick"})
    names = _node_names(wf)
    image = "sub_0002_ses_V01_T1w_wf"
    reg = f"reg_{TEMPLATE}_wf"
    for node in (f"{image}.{reg}.register", f"{image}.{reg}.warp_dseg",
                 f"{image}.{reg}.report", f"{image}.ds_{reg}", f"{image}.ds_report_{reg}",
                 f"{image}.tissue_volumes", f"{image}.ds_volumes"):
        assert node in names, node
    volumes = wf.get_node(f"{image}.tissue_volumes")
    assert (volumes.inputs.contrast, volumes.inputs.age_group) == ("T1w", "Month24")
    fetal = "sub_0009_ses_V01_T2w_wf"
    assert not any(n.startswith(f"{fetal}.reg_") for n in names)
    assert f"{fetal}.ds_volumes" in names
    assert "sub-0009_ses-V01_T2w.nii.gz: fetal image, output space" in caplog.text
    sink = wf.get_node(f"{image}.ds_{reg}")
    assert sink.inputs.space == TEMPLATE and sink.inputs.contrast == "T1w"
    figure = wf.get_node(f"{image}.ds_report_{reg}")
    assert figure.inputs.space == TEMPLATE and figure.inputs.desc == "registration"
    assert "antsRegistration" in wf.visit_desc()
    plain = init_participant_wf(subject="0002", jobs=jobs[:1], output_dir=tmp_path / "out",
                                bids_dir=bids_dir, models_dir=small_models)
    assert not any(".reg_" in n for n in _node_names(plain))


def test_cli_builds_registration_nodes(local_tf, bids_dir, small_models, tmp_path, caplog):
    opts = parse_args([str(bids_dir), str(tmp_path / "out"), "participant", "-w",
                       str(tmp_path / "work"), "--participant-label", "0002", "0009",
                       "--models-dir", str(small_models), "--device", "cpu",
                       "--output-spaces", TEMPLATE, "--skip-bids-validation", "--sloppy"])
    cfg = cli_parser.build_config(opts)
    assert cfg.to_dict()["workflow"]["sloppy"] is True
    outcomes = {}
    jobs = cli_workflow.plan_jobs(cfg, outcomes)
    workflow, built = cli_workflow.build_workflow(cfg, jobs, outcomes)
    assert len(built) == 2
    names = _node_names(workflow)
    assert any(n.endswith(f"sub_0002_ses_V01_T1w_wf.ds_reg_{TEMPLATE}_wf") for n in names)
    assert not any("sub_0009" in n and ".reg_" in n for n in names)
    register = workflow.get_node(f"sub_0002_wf.sub_0002_ses_V01_T1w_wf.reg_{TEMPLATE}_wf."
                                 "register")
    assert (register.inputs.iterations, register.inputs.spacing_mm) == ("quick", 2.0)
    assert "[@templateflow]" in cli_workflow.citation_text(workflow)


def test_missing_template_fails_the_build_clearly(tmp_path, bids_dir, small_models,
                                                  monkeypatch, caplog):
    root = build_templateflow_home(tmp_path / "tf", empty=("T1w",))
    use_templateflow_home(monkeypatch, root)
    opts = parse_args([str(bids_dir), str(tmp_path / "out"), "participant", "-w",
                       str(tmp_path / "work"), "--participant-label", "0002",
                       "--models-dir", str(small_models), "--device", "cpu",
                       "--output-spaces", TEMPLATE, "--skip-bids-validation"])
    cfg = cli_parser.build_config(opts)
    outcomes = {}
    _, built = cli_workflow.build_workflow(cfg, cli_workflow.plan_jobs(cfg, outcomes), outcomes)
    assert built == []
    reason = outcomes["sub-0002/ses-V01/anat/sub-0002_ses-V01_T1w.nii.gz"].reason
    assert f"TemplateFlow template {TEMPLATE} is not available" in reason
    assert "TEMPLATEFLOW_HOME" in reason


# --------------------------------------------------------------------------- sinks
def test_space_and_volumes_sinks(tmp_path):
    from bmex_wf.interfaces.bids import BMEXSpaceSink, BMEXVolumesSink

    bids = tmp_path / "bids"
    anat = bids / "sub-01" / "ses-1" / "anat"
    anat.mkdir(parents=True)
    source = anat / "sub-01_ses-1_T2w.nii.gz"
    img = nb.Nifti1Image(np.zeros((3, 3, 3), np.uint8), np.eye(4))
    img.to_filename(source)
    files = {}
    for name in ("enhanced.nii.gz", "dseg.nii.gz"):
        img.to_filename(tmp_path / name)
        files[name] = str(tmp_path / name)
    for name in ("fwd.h5", "inv.h5", "vol.tsv"):
        (tmp_path / name).write_text(name)
    out = tmp_path / "out"
    common = {"output_dir": str(out), "source_file": str(source), "bids_dir": str(bids),
              "contrast": "T2w"}
    result = BMEXSpaceSink(**common, space="MNIInfant:cohort-2", enhanced=files["enhanced.nii.gz"],
                           dseg=files["dseg.nii.gz"], xfm_forward=str(tmp_path / "fwd.h5"),
                           xfm_inverse=str(tmp_path / "inv.h5"),
                           metadata={"AgeMonths": 13.0}).run()
    folder = out / "sub-01" / "ses-1" / "anat"
    expected = {
        "sub-01_ses-1_space-MNIInfant_cohort-2_desc-enhanced_T2w.nii.gz",
        "sub-01_ses-1_space-MNIInfant_cohort-2_desc-enhanced_T2w.json",
        "sub-01_ses-1_space-MNIInfant_cohort-2_dseg.nii.gz",
        "sub-01_ses-1_space-MNIInfant_cohort-2_dseg.json",
        "sub-01_ses-1_from-T2w_to-MNIInfant_cohort-2_mode-image_xfm.h5",
        "sub-01_ses-1_from-MNIInfant_to-T2w_cohort-2_mode-image_xfm.h5",
    }
    assert {Path(p).name for p in result.outputs.out_files} == expected
    assert {p.name for p in folder.iterdir()} == expected
    assert (folder / "sub-01_ses-1_from-MNIInfant_to-T2w_cohort-2_mode-image_xfm.h5"
            ).read_text() == "inv.h5"
    meta = json.loads((folder / "sub-01_ses-1_space-MNIInfant_cohort-2_dseg.json").read_text())
    assert meta["SpatialReference"] == "MNIInfant:cohort-2" and meta["Cohort"] == "2"
    assert meta["Labels"]["3"] == "WM" and meta["AgeMonths"] == 13.0
    assert meta["Sources"] == ["bids:raw:sub-01/ses-1/anat/sub-01_ses-1_T2w.nii.gz"]
    BMEXVolumesSink(**common, in_tsv=str(tmp_path / "vol.tsv")).run()
    table = folder / "sub-01_ses-1_space-T2w_desc-volumes_morph.tsv"
    assert table.read_text() == "vol.tsv"
    assert "GM_mL" in json.loads(table.with_suffix(".json").read_text())
