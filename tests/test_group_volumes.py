"""Tissue volumes joined into the group summary (``group_qc.tsv`` and ``group.html``)."""

from __future__ import annotations

import csv
import logging

import pytest

from bmex_wf.postproc.volumes import volumes_table
from bmex_wf.reports import check_report, run_group_level
from bmex_wf.reports.figures import summary_html
from bmex_wf.reports.group import (
    GROUP_COLUMNS,
    VOLUME_COLUMNS,
    find_volumes_table,
    volume_cells,
)
from bmex_wf.reports.qc import normalize_qc

#: Volumes of the first image (sub-01 ses-A T1w), all three methods.
VOLUMES_A = {
    "bmex": {"CSF": 150.5, "GM": 610.25, "WM": 420.0, "brain": 1180.75},
    "atropos_original": {"CSF": 170.0, "GM": 580.0, "WM": 430.125, "brain": 1180.125},
    "atropos_enhanced": {"CSF": 160.0, "GM": 600.0, "WM": 421.0, "brain": 1181.0},
}


def log_summary(out, subject, session, contrast, qi):
    record = {"QI": qi, "TCTBefore": 1.0, "TCTAfter": 1.0 / qi, "Contrast": contrast,
              "AgeMonths": 30.0, "AgeGroup": "Month24", "MaskSource": "nonzero",
              "Model": {"path": "/m/bmex-builtin-enhance.pt", "builtin": True}}
    figures = out / f"sub-{subject}" / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    src = f"sub-{subject}_ses-{session}"
    (figures / f"{src}_desc-summary_{contrast}.html").write_text(
        summary_html(normalize_qc(record), title=f"{src}_{contrast}"))
    anat = out / f"sub-{subject}" / f"ses-{session}" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    return anat, src


@pytest.fixture
def out_dir(tmp_path):
    """Three images: volumes of all methods, network only, and none."""
    out = tmp_path / "out"
    anat, src = log_summary(out, "01", "A", "T1w", 0.9)
    (anat / f"{src}_desc-volumes_morph.tsv").write_text(volumes_table(VOLUMES_A))
    anat, src = log_summary(out, "02", "A", "T2w", 1.1)
    (anat / f"{src}_desc-volumes_morph.tsv").write_text(
        volumes_table({"bmex": {"CSF": 50.0, "GM": 60.0, "WM": 40.0, "brain": 150.0}}))
    log_summary(out, "03", "A", "T1w", 1.0)
    return out


def _read(path):
    with open(path, newline="") as handle:
        return {row["subject"]: row for row in csv.DictReader(handle, delimiter="\t")}


def test_group_tsv_gains_volume_columns(out_dir):
    tsv, page = run_group_level(out_dir, failures=[])
    rows = _read(tsv)
    assert set(VOLUME_COLUMNS) <= set(GROUP_COLUMNS)
    assert list(next(iter(rows.values()))) == list(GROUP_COLUMNS)
    for method, values in VOLUMES_A.items():
        for tissue, value in values.items():
            assert float(rows["01"][f"{method}_{tissue}_mL"]) == pytest.approx(value)
    assert rows["02"]["bmex_GM_mL"] == "60.0"
    assert rows["02"]["atropos_enhanced_GM_mL"] == "n/a"
    assert all(rows["03"][col] == "n/a" for col in VOLUME_COLUMNS)
    assert rows["01"]["qi"] == "0.9" and rows["01"]["status"] == "success"

    text = page.read_text()
    assert check_report(page) == []
    for column in ("bmex_GM_mL", "atropos_original_GM_mL", "atropos_enhanced_WM_mL"):
        assert f"<th>{column}</th>" in text
    assert "<td>610.25</td>" in text and "<td>430.125</td>" in text


def test_page_without_volumes_keeps_its_columns(tmp_path):
    out = tmp_path / "out"
    log_summary(out, "01", "A", "T1w", 0.9)
    tsv, page = run_group_level(out, failures=[])
    assert all(value == "n/a" for key, value in _read(tsv)["01"].items()
               if key in VOLUME_COLUMNS)
    text = page.read_text()
    assert "_mL</th>" not in text and "<th>qi</th>" in text


def test_find_volumes_table_matches_whole_entities(tmp_path):
    anat = tmp_path / "sub-01" / "ses-A" / "anat"
    anat.mkdir(parents=True)
    other_run = anat / "sub-01_ses-A_run-2_desc-volumes_morph.tsv"
    other_run.write_text(volumes_table(VOLUMES_A))
    assert find_volumes_table(tmp_path, "01", "sub-01_ses-A_T1w", "T1w") is None
    assert find_volumes_table(tmp_path, "sub-01", "sub-01_ses-A_run-2_T1w", "T1w") == other_run
    t1 = anat / "sub-01_ses-A_space-T1w_desc-volumes_morph.tsv"
    t2 = anat / "sub-01_ses-A_space-T2w_desc-volumes_morph.tsv"
    for path in (t1, t2):
        path.write_text(volumes_table(VOLUMES_A))
    assert find_volumes_table(tmp_path, "01", "sub-01_ses-A_T1w", "T1w") == t1
    assert find_volumes_table(tmp_path, "01", "sub-01_ses-A_T2w", "T2w") == t2
    assert find_volumes_table(tmp_path, "02", "sub-02_T1w", "T1w") is None


def test_unreadable_volumes_table_warns_and_leaves_na(out_dir, caplog):
    bad = out_dir / "sub-02" / "ses-A" / "anat" / "sub-02_ses-A_desc-volumes_morph.tsv"
    bad.write_text("method\tCSF_mL\tGM_mL\tWM_mL\tbrain_mL\nbmex\tmany\t1\t1\t1\n")
    assert volume_cells(None) == {}
    with caplog.at_level(logging.WARNING, logger="bmex_wf.reports"):
        tsv, _ = run_group_level(out_dir, failures=[])
    assert any("sub-02_ses-A_desc-volumes_morph.tsv" in r.getMessage() and "CSF_mL" in
               r.getMessage() for r in caplog.records)
    rows = _read(tsv)
    assert rows["02"]["bmex_GM_mL"] == "n/a" and rows["02"]["qi"] == "1.1"
    assert float(rows["01"]["bmex_GM_mL"]) == pytest.approx(610.25)
