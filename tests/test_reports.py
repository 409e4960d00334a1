"""Report workflow, subject/group pages, --reports-only, structural validation."""

from __future__ import annotations

import csv
import json
import shutil

import nibabel as nb
import pytest

from bmex_wf.reports import (
    ReportError,
    check_report,
    generate_subject_report,
    rebuild_reports,
    run_group_level,
    run_reports,
)
from bmex_wf.reports.group import GROUP_COLUMNS
from bmex_wf.reports.qc import normalize_qc
from bmex_wf.workflows.reports import init_report_wf, template_name

from .helpers import shared_path
from .test_demo_scores import EXAMPLE_SCORES
from .test_reportlets import QC_RECORD, T1W, write_case

FIGURES = {
    "sub-01_ses-A_desc-summary_T1w.html",
    "sub-01_ses-A_desc-enhancement_T1w.svg",
    "sub-01_ses-A_space-T1w_desc-brain_mask.svg",
    "sub-01_ses-A_space-T1w_dseg.svg",
    "sub-01_ses-A_desc-histogram_T1w.svg",
}


def build_outputs(root, crop=64, display_spacing=2.0):
    """Run the report workflow once on a crop of a real scan; return OUTPUT_DIR."""
    img = nb.load(shared_path(*T1W))
    lo = 150 - crop // 2
    case = write_case(img.slicer[lo:lo + crop, lo:lo + crop, lo:lo + crop], root)
    source = root / "bids" / "sub-01" / "ses-A" / "anat" / "sub-01_ses-A_T1w.nii.gz"
    source.parent.mkdir(parents=True)
    shutil.copy(case["orig"], source)
    qc = root / "qc.json"
    qc.write_text(json.dumps(QC_RECORD))
    out = root / "out"
    wf = init_report_wf(output_dir=out, contrast="T1w", display_spacing=display_spacing)
    wf.base_dir = str(root / "work")
    for key, value in (("source_file", source), ("in_file", case["orig"]),
                       ("enhanced", case["enh"]), ("brain_mask", case["mask"]),
                       ("dseg", case["dseg"]), ("qc", qc), ("age_group", "Month24")):
        setattr(wf.inputs.inputnode, key, str(value))
    wf.run()
    return out


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return build_outputs(tmp_path_factory.mktemp("reports"))


@pytest.fixture
def out_dir(outputs, tmp_path):
    """A private copy of the outputs, with a boilerplate and two crash files."""
    out = tmp_path / "out"
    shutil.copytree(outputs, out)
    logs = out / "logs"
    logs.mkdir()
    (logs / "CITATION.md").write_text("Images were enhanced with *bmex-wf* 0.1.0.\n")
    for subject in ("01", "02"):
        (logs / f"crash-20260101-000000-user-ds_outputs-{subject}.txt").write_text(
            f"Node: sub_{subject}_wf.sub_{subject}_ses_A_T1w_wf.bmex_wf.enhance\n"
            f"Working directory: {tmp_path}/work/enhance\n\n"
            "Node inputs:\n\nuse_gpu = False\n\n"
            "Traceback (most recent call last):\n"
            f"RuntimeError: enhancement failed for subject {subject}\n")
    return out


def test_report_wf_writes_figures_with_derivatives_names(outputs):
    figures = outputs / "sub-01" / "figures"
    assert {p.name for p in figures.iterdir()} == FIGURES
    assert sorted(p.name for p in outputs.iterdir()) == ["sub-01"]
    # finalised SVGs: no fixed size on the root element
    for svg in figures.glob("*.svg"):
        first = svg.read_text().splitlines()[0]
        assert first.startswith("<?xml") and "<svg" in first and "width=" not in first


def test_report_wf_rejects_unknown_contrast(tmp_path):
    with pytest.raises(ValueError, match="contrast"):
        init_report_wf(output_dir=tmp_path, contrast="FLAIR")


def test_template_name():
    assert template_name("Month9", "T2w") == "Template-Month9-T2w"
    assert template_name("18", "T1w") == "Template-Month18-T1w"
    assert template_name("fetal", "T2w") == "Template-Fetal-T2w"
    assert template_name("Template-Month0-T1w", "T1w") == "Template-Month0-T1w"


def test_subject_report_is_complete_and_self_contained(out_dir):
    figures = out_dir / "sub-01" / "figures"
    before = {p.name: (p.stat().st_ino, p.read_bytes()) for p in figures.iterdir()}
    page = generate_subject_report(out_dir, "sub-01", run_uuid="run-1", command="bmex-wf a b")
    assert page == out_dir / "sub-01.html"
    assert check_report(page) == []
    text = page.read_text()
    for name in FIGURES - {"sub-01_ses-A_desc-summary_T1w.html"}:
        assert f"sub-01/figures/{name}" in text
    assert "0.8731" in text and "BMEX-Month24-T1-model.pt" in text  # summary panel inlined
    assert "Images were enhanced with" in text  # boilerplate
    assert "enhancement failed for subject 01" in text  # this participant's crash
    assert "subject 02" not in text  # not another participant's
    assert "run-1" in text and "bmex-wf a b" in text
    assert "http://" not in text and "https://" not in text
    assert "<script src" not in text and "<link" not in text
    # the assembler left the figures alone (no in-place rewrite)
    assert before == {p.name: (p.stat().st_ino, p.read_bytes()) for p in figures.iterdir()}
    assert [p.name for p in (out_dir / "logs").iterdir() if p.name.startswith(".")] == []


def test_subject_report_shows_demo_scores_only_for_a_demo_run(out_dir):
    from bmex_wf.reports.demo_scores import SCORES_NAME

    title = "Demo: distance to the clean MNI152"
    assert title not in generate_subject_report(out_dir, "01").read_text()
    anat = out_dir / "sub-01" / "ses-A" / "anat"
    anat.mkdir(parents=True)
    (anat / SCORES_NAME).write_text(json.dumps(EXAMPLE_SCORES))
    page = generate_subject_report(out_dir, "01")
    text = page.read_text()
    assert check_report(page) == []
    assert text.count(title) >= 1 and 'id="demo-meta"' in text
    for figure in ("fitted PSNR 21.23 dB, fitted SSIM 0.8123", "fitted PSNR 23.46 dB, fitted SSIM 0.8568",
                   "Dice 0.712; 650 mL (MNI152: 1080 mL)", "Dice 0.801; 700 mL (MNI152: 632 mL)"):
        assert figure in text
    assert text.index('<section id="Demo"') < text.index(title) < text.index('<section id="About"')


def test_stock_nireports_template_is_caught_by_the_validator(out_dir):
    from nireports.assembler.report import Report

    from bmex_wf.reports.paths import reports_spec

    robj = Report(out_dir, "x", bootstrap_file=reports_spec(), out_filename="stock.html",
                  reportlets_dir=out_dir, plugins=[], metadata={"crash_dir": str(out_dir)},
                  subject="01")
    robj.generate_report()
    problems = check_report(out_dir / "stock.html")
    assert any("jquery" in p and "remote resource" in p for p in problems)


def test_check_report_finds_broken_links(tmp_path):
    (tmp_path / "fig.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg"/>')
    page = tmp_path / "page.html"
    page.write_text('<html><body id="top"><a href="#top">ok</a><a href="#nowhere">x</a>'
                    '<img src="fig.svg"/><img src="missing.svg"/>'
                    '<object data="fig.svg"></object><a href="https://example.org">web</a>'
                    '<script src="https://cdn.example/x.js"></script></body></html>')
    problems = check_report(page)
    assert len(problems) == 3
    assert any("#nowhere" in p and "anchor" in p for p in problems)
    assert any("missing.svg" in p and "missing file" in p for p in problems)
    assert any("x.js" in p and "remote resource" in p for p in problems)


def _read_tsv(path):
    with open(path, newline="") as fobj:
        return list(csv.DictReader(fobj, delimiter="\t"))


def test_group_level_table_and_page(out_dir):
    generate_subject_report(out_dir, "01")
    (out_dir / "logs" / "summary-run1.tsv").write_text(
        "image\tstatus\treason\n"
        "sub-01/ses-A/anat/sub-01_ses-A_T1w.nii.gz\tfailed\tfirst attempt\n"
        "sub-02/ses-A/anat/sub-02_ses-A_T2w.nii.gz\tfailed\tno age: add age to "
        "participants.tsv or use --age-months\n")
    tsv, page = run_group_level(out_dir)
    rows = _read_tsv(tsv)
    assert list(rows[0]) == list(GROUP_COLUMNS)
    assert len(rows) == 2  # the summary of sub-01 supersedes its logged failure
    ok, failed = rows
    assert ok["subject"] == "01" and ok["session"] == "A" and ok["contrast"] == "T1w"
    assert ok["qi"] == "0.8731" and ok["tct_before"] == "1.052"
    assert ok["age"] == "72.0" and ok["group"] == "Month24"
    assert ok["model"] == "BMEX-Month24-T1-model.pt" and ok["mask_source"] == "lifespanstrip"
    assert ok["status"] == "success"
    assert failed["subject"] == "02" and failed["contrast"] == "T2w"
    assert failed["status"] == "failed" and failed["qi"] == "n/a"
    assert "--age-months" in failed["error"]
    text = page.read_text()
    assert check_report(page) == []
    assert 'href="sub-01.html"' in text and 'href="sub-02.html"' not in text
    assert "<svg" in text and "Month24" in text and "(n=1)" in text


def test_reports_only_rebuilds_pages_from_outputs(out_dir):
    written = rebuild_reports(out_dir, ["01"], run_uuid="again")
    assert [p.name for p in written] == ["sub-01.html", "group_qc.tsv", "group.html"]
    assert "again" in (out_dir / "sub-01.html").read_text()
    with pytest.raises(ReportError, match="no figures for participant"):
        rebuild_reports(out_dir, ["sub-07"])
    assert run_reports(out_dir, None, "group", "x") == 0
    empty = out_dir.parent / "empty"
    empty.mkdir()
    assert run_reports(empty, None, "participant", "x") == 1


def test_qc_normalisation_tolerates_key_styles():
    flat = normalize_qc({"qi": 1.1, "tct_before": 2, "TCT-After": 3, "age_months": 5,
                         "mask source": "nonzero", "model_file": "m.pt", "builtin": False})
    nested = normalize_qc({"QI": 1.1, "TCT": {"Before": 2, "After": 3}, "AgeMonths": 5,
                           "MaskSource": "nonzero", "Model": {"path": "m.pt",
                                                              "builtin": False}})
    for key in ("qi", "tct_before", "tct_after", "age_months", "mask_source", "model_file",
                "builtin"):
        assert flat[key] == nested[key], key
    assert normalize_qc({})["qi"] is None
