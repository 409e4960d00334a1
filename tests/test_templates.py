"""Output spaces: parsing, cohort from age, TemplateFlow fetching (local home, offline error)."""

from __future__ import annotations

import doctest
import logging

import pytest

from bmex_wf.spaces import templateflow as templates
from bmex_wf.spaces.templateflow import (
    OutputSpace,
    OutputSpaceError,
    TemplateFetchError,
    check_output_space,
    cohort_from_age,
    fetch_template,
    parse_output_space,
    resolve_space,
    space_output_names,
)

from .templateflow_local import TEMPLATE, build_templateflow_home, use_templateflow_home


def test_doctests():
    assert doctest.testmod(templates).failed == 0


@pytest.mark.parametrize("value, expected", [
    ("MNI152NLin2009cAsym", OutputSpace("MNI152NLin2009cAsym")),
    ("MNIInfant:cohort-1", OutputSpace("MNIInfant", "1")),
    ("UNCInfant:cohort-2:res-2", OutputSpace("UNCInfant", "2", 2)),
    (" MNI152NLin6Asym:res-2 ", OutputSpace("MNI152NLin6Asym", None, 2)),
])
def test_parse_output_space(value, expected):
    assert parse_output_space(value) == expected
    assert parse_output_space(str(expected)) == expected


@pytest.mark.parametrize("value", ["MNI-152", "MNIInfant:cohort-1:cohort-2", "MNIInfant:age-3",
                                   "MNI152NLin2009cAsym:res-high", ""])
def test_parse_output_space_rejects(value):
    with pytest.raises(OutputSpaceError, match="invalid output space"):
        parse_output_space(value)


def test_output_space_entities():
    space = OutputSpace("MNIInfant", "3", 2)
    assert space.entities == "space-MNIInfant_cohort-3_res-2"
    names = space_output_names("sub-01_run-1_T2w.nii.gz", "T2w", space)
    assert names == {
        "enhanced": "sub-01_run-1_space-MNIInfant_cohort-3_res-2_desc-enhanced_T2w.nii.gz",
        "dseg": "sub-01_run-1_space-MNIInfant_cohort-3_res-2_dseg.nii.gz",
        "xfm_forward": "sub-01_run-1_from-T2w_to-MNIInfant_cohort-3_mode-image_xfm.h5",
        "xfm_inverse": "sub-01_run-1_from-MNIInfant_to-T2w_cohort-3_mode-image_xfm.h5",
    }
    plain = space_output_names("sub-01_T1w.nii.gz", "T1w", OutputSpace("MNI152NLin6Asym"))
    assert plain["dseg"] == "sub-01_space-MNI152NLin6Asym_dseg.nii.gz"
    assert plain["xfm_forward"] == "sub-01_from-T1w_to-MNI152NLin6Asym_mode-image_xfm.h5"


@pytest.mark.parametrize("template, months, cohort", [
    ("MNIInfant", 0, "1"), ("MNIInfant", 2.4, "1"), ("MNIInfant", 2.6, "2"),
    ("MNIInfant", 11, "4"), ("MNIInfant", 12, "5"), ("MNIInfant", 23, "8"),
    ("MNIInfant", 60, "11"), ("UNCInfant", 1, "1"), ("UNCInfant", 8, "1"),
    ("UNCInfant", 9, "2"), ("UNCInfant", 13, "3"), ("UNCInfant", 24, "3"),
])
def test_cohort_from_age(template, months, cohort):
    assert cohort_from_age(template, months) == cohort


def test_cohort_from_age_limits():
    with pytest.raises(ValueError, match="beyond the oldest MNIInfant cohort"):
        cohort_from_age("MNIInfant", 61)
    with pytest.raises(ValueError, match="no cohort-by-age rule"):
        cohort_from_age("MNIPediatricAsym", 100)


def test_cohort_rule_agrees_with_templateflow_ranges():
    """MNIInfant's cohort age ranges in its template_description.json (TemplateFlow home)."""
    cohorts = templates.template_description("MNIInfant").get("cohort")
    if not cohorts:
        pytest.skip("the TemplateFlow home has no MNIInfant description")
    for label, entry in cohorts.items():
        low, high = entry["age"]
        assert cohort_from_age("MNIInfant", (low + high) / 2) == label
        assert cohort_from_age("MNIInfant", high) == label


def test_check_output_space_against_templateflow_home():
    assert check_output_space(OutputSpace("MNIInfant")) == OutputSpace("MNIInfant")
    assert check_output_space(OutputSpace("MNIInfant", "11")).cohort == "11"
    with pytest.raises(OutputSpaceError, match="no cohort 12"):
        check_output_space(OutputSpace("MNIInfant", "12"))
    with pytest.raises(OutputSpaceError, match="has no cohorts"):
        check_output_space(OutputSpace("MNI152NLin2009cAsym", "1"))
    with pytest.raises(OutputSpaceError, match="needs a cohort"):
        check_output_space(OutputSpace("MNIPediatricAsym"))
    with pytest.raises(OutputSpaceError, match="unknown TemplateFlow template 'NotATemplate'"):
        check_output_space(OutputSpace("NotATemplate"))


def test_resolve_space(caplog):
    caplog.set_level(logging.INFO, logger="bmex_wf.templates")
    infant = OutputSpace("MNIInfant")
    assert resolve_space(infant, 23, fetal=False) == OutputSpace("MNIInfant", "8")
    assert resolve_space(OutputSpace("MNIInfant", "2"), 23, fetal=False).cohort == "2"
    assert resolve_space(infant, 300, fetal=False, source="sub-1_T1w.nii.gz") is None
    assert "sub-1_T1w.nii.gz: output space MNIInfant skipped" in caplog.text
    adult = OutputSpace("MNI152NLin2009cAsym")
    assert resolve_space(adult, 300, fetal=False) == adult
    assert resolve_space(adult, -3, fetal=True, source="sub-9_T2w.nii.gz") is None
    assert "sub-9_T2w.nii.gz: fetal image, output space MNI152NLin2009cAsym skipped" \
        in caplog.text
    fetal_tpl = OutputSpace("MyFetalAtlas")
    assert resolve_space(fetal_tpl, -3, fetal=True) == fetal_tpl


def test_fetch_from_local_home(local_tf, caplog):
    caplog.set_level(logging.INFO, logger="bmex_wf.templates")
    space = check_output_space(parse_output_space(TEMPLATE))
    files = fetch_template(space, "T1w")
    folder = local_tf / f"tpl-{TEMPLATE}"
    assert files.image == folder / f"tpl-{TEMPLATE}_res-1_T1w.nii.gz"
    assert files.mask == folder / f"tpl-{TEMPLATE}_res-1_desc-brain_mask.nii.gz"
    assert sorted(files.probsegs) == ["GM", "WM"] and files.dseg is None
    assert files.contrast == "T1w"
    t2 = fetch_template(space, "T2w")
    assert t2.image == files.image and t2.contrast == "T1w"
    assert "has no T2w image" in caplog.text
    with pytest.raises(TemplateFetchError, match="has no T1w/T2w image"):
        fetch_template(OutputSpace(TEMPLATE, resolution=2), "T1w")


def test_offline_missing_template_is_one_clear_error(tmp_path, monkeypatch):
    root = build_templateflow_home(tmp_path / "tf", empty=("T1w",))
    use_templateflow_home(monkeypatch, root)
    with pytest.raises(TemplateFetchError) as info:
        fetch_template(OutputSpace(TEMPLATE), "T1w")
    message = str(info.value)
    assert "\n" not in message
    assert f"TemplateFlow template {TEMPLATE} is not available" in message
    assert f"tpl-{TEMPLATE}_res-1_T1w.nii.gz" in message
    assert "TEMPLATEFLOW_HOME" in message
    assert f"from templateflow.api import get; get('{TEMPLATE}')" in message
    with pytest.raises(OutputSpaceError, match="unknown TemplateFlow template 'MNIInfant'"):
        check_output_space(OutputSpace("MNIInfant"))


def test_offline_optional_files_are_skipped(tmp_path, monkeypatch, caplog):
    """Probability maps only feed the reportlet: not fetchable, they are left out (logged)."""
    root = build_templateflow_home(tmp_path / "tf", empty=("label-WM_probseg",))
    use_templateflow_home(monkeypatch, root)
    files = fetch_template(OutputSpace(TEMPLATE), "T1w")
    assert sorted(files.probsegs) == ["GM"]
    assert "label-WM_probseg.nii.gz is neither cached" in caplog.text
