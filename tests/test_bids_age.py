"""Age lookup (NiBabies' rules) on the shared dataset and on every quirk, synthetic."""

from __future__ import annotations

import json
import logging

import pytest

from bmex_wf.age import AgeError, age_from_override, age_group, parse_age_value, to_months
from bmex_wf.bids.ages import lookup_age
from bmex_wf.bids.inputs import find_images, find_precomputed_mask, load_bids_filters

# subject/session -> (months, fetal, group, where the age comes from, warning expected)
SHARED = {
    ("0001", "V01"): (72.0, False, "Month24", "ses-V01/sub-0001_ses-V01_scans.tsv (row sub-0001", "anat/sub-0001_ses-V01_scans.tsv is not at a standard"),
    ("0001", "V02"): (72.0, False, "Month24", "sub-0001_sessions.tsv (row ses-V02)", None),
    ("0002", "V01"): (23.0, False, "Month24", "sub-0002_ses-V01_scans.tsv (row sub-0002", None),
    ("0003", "V01"): (19.0, False, "Month18", "single row naming another file", "single row naming sub-0002"),
    ("0004", "V01"): (11.0, False, "Month12", "single row naming another file", "single row naming sub-0002"),
    ("0005", "V01"): (9.0, False, "Month9", "single row naming another file", "single row naming sub-0002"),
    ("0006", "V01"): (6.0, False, "Month6", "single row naming another file", "single row naming sub-0002"),
    ("0007", "V01"): (4.0, False, "Month3", "sub-0007_ses-V01_scans.tsv (row sub-0007", None),
    ("0008", "V01"): (1.0, False, "Month0", "sub-0008_ses-V01_scans.tsv (row sub-0008", None),
    ("0009", "V01"): ((25 - 40) * 0.230137, True, "Fetal", "sub-0009_ses-V01_scans.tsv (row sub-0009", "anat/sub-0009_ses-V01_scans.tsv is not at a standard"),
}


@pytest.mark.parametrize("sub,ses", sorted(SHARED))
def test_shared_dataset_ages(bids_dir, caplog, sub, ses):
    months, fetal, group, where, warning = SHARED[(sub, ses)]
    contrast = "T2w" if fetal else "T1w"
    image = bids_dir / f"sub-{sub}" / f"ses-{ses}" / "anat" / f"sub-{sub}_ses-{ses}_{contrast}.nii.gz"
    with caplog.at_level(logging.WARNING, logger="bmex_wf.bids"):
        age = lookup_age(bids_dir, image)
    assert age.months == pytest.approx(months)
    assert age.fetal is fetal
    assert age_group(age.workflow_months) == group
    assert where in age.source
    assert str(bids_dir) not in age.source  # paths relative to the dataset
    if warning:
        assert any(warning in r.getMessage() for r in caplog.records)
        assert any(warning in w for w in age.warnings)
    else:
        assert not age.warnings


def test_shared_fetal_uses_session_level_not_anat(bids_dir):
    """sub-0009's anat/ table says 30 gestational weeks; the standard one (25) wins."""
    image = bids_dir / "sub-0009/ses-V01/anat/sub-0009_ses-V01_T2w.nii.gz"
    age = lookup_age(bids_dir, image)
    assert age.months == pytest.approx(-15 * 0.230137)
    assert "anat" not in age.source.split(",")[0]


def test_find_images_shared(bids_dir):
    images = find_images(bids_dir)
    assert len(images) == 10
    assert {i["contrast"] for i in images} == {"T1w", "T2w"}
    only = find_images(bids_dir, participant_label=["sub-0009", "0002"])
    assert [(i["subject"], i["contrast"]) for i in only] == [("0002", "T1w"), ("0009", "T2w")]
    ses2 = find_images(bids_dir, session_label=["V02"])
    assert [i["path"].name for i in ses2] == ["sub-0001_ses-V02_T1w.nii.gz"]
    t2 = find_images(bids_dir, bids_filters={"t1w": {"subject": "nobody"}})
    assert [i["contrast"] for i in t2] == ["T2w"]


# --------------------------------------------------------------------------- synthetic
def _dataset(tmp_path, files: dict):
    root = tmp_path / "ds"
    (root / "sub-01/ses-A/anat").mkdir(parents=True)
    (root / "dataset_description.json").write_text('{"Name": "t", "BIDSVersion": "1.9.0"}')
    image = root / "sub-01/ses-A/anat/sub-01_ses-A_T1w.nii.gz"
    image.write_bytes(b"")
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text if isinstance(text, str) else json.dumps(text))
    return root, image


AGE_UNITS = {"age": {"Units": "weeks"}}


@pytest.mark.parametrize("files,months,fetal,source", [
    ({"participants.tsv": "participant_id\tage_years\nsub-01\t2\n"}, 24.0, False, "participants.tsv"),
    ({"participants.tsv": "participant_id\tage_months\nsub-02\t5\nsub-01\t7\n"}, 7.0, False, "row sub-01"),
    ({"participants.tsv": "participant_id\tage_weeks\nsub-01\t10\n"}, 2.30137, False, "age_weeks"),
    ({"participants.tsv": "participant_id\tage\nsub-01\t10\n", "participants.json": AGE_UNITS}, 2.30137, False, "column age"),
    ({"sub-01/sub-01_sessions.tsv": "session_id\tage\nses-A\t3 \n",
      "sub-01/sub-01_sessions.json": {"age": {"Units": "years"}}}, 36.0, False, "sessions.tsv"),
    ({"sub-01/sub-01_sessions.tsv": "session_id\tage\nA\t6 years \n"}, 72.0, False, "sessions.tsv"),
    ({"sub-01/ses-A/sub-01_ses-A_scans.tsv": "filename\tage\nanat/sub-01_ses-A_T1w.nii.gz\t30 gestational_weeks\n"},
     -10 * 0.230137, True, "scans.tsv"),
    ({"sub-01/ses-A/sub-01_ses-A_scans.tsv": "filename\tage_months\nanat/sub-01_ses-A_T2w.nii.gz\t4\n"
                                             "anat/sub-01_ses-A_T1w.nii.gz\t5\n",
      "participants.tsv": "participant_id\tage_months\nsub-01\t99\n"}, 5.0, False, "row anat/sub-01_ses-A_T1w"),
])
def test_lookup_rules(tmp_path, files, months, fetal, source):
    root, image = _dataset(tmp_path, files)
    age = lookup_age(root, image)
    assert age.months == pytest.approx(months)
    assert age.fetal is fetal
    assert source in age.source


def test_precedence_scans_then_sessions_then_participants(tmp_path):
    files = {"participants.tsv": "participant_id\tage_months\nsub-01\t30\n",
             "sub-01/sub-01_sessions.tsv": "session_id\tage_months\nses-A\t20\n",
             "sub-01/ses-A/sub-01_ses-A_scans.tsv": "filename\tage_months\nanat/sub-01_ses-A_T1w.nii.gz\t10\n"}
    root, image = _dataset(tmp_path, files)
    assert lookup_age(root, image).months == 10
    (root / "sub-01/ses-A/sub-01_ses-A_scans.tsv").unlink()
    assert lookup_age(root, image).months == 20
    (root / "sub-01/sub-01_sessions.tsv").unlink()
    assert lookup_age(root, image).months == 30


def test_multirow_mismatch_ignored_with_warning(tmp_path, caplog):
    files = {"sub-01/ses-A/sub-01_ses-A_scans.tsv": "filename\tage_months\nanat/x_T1w.nii.gz\t4\n"
                                                    "anat/y_T1w.nii.gz\t5\n",
             "participants.tsv": "participant_id\tage_months\nsub-01\t8\n"}
    root, image = _dataset(tmp_path, files)
    with caplog.at_level(logging.WARNING, logger="bmex_wf.bids"):
        age = lookup_age(root, image)
    assert age.months == 8
    assert any("no row for sub-01_ses-A_T1w.nii.gz" in r.getMessage() for r in caplog.records)


def test_nonstandard_location_only_warns(tmp_path, caplog):
    files = {"sub-01/ses-A/anat/sub-01_ses-A_scans.tsv": "filename\tage_months\nsub-01_ses-A_T1w.nii.gz\t4\n"}
    root, image = _dataset(tmp_path, files)
    with caplog.at_level(logging.WARNING, logger="bmex_wf.bids"), \
            pytest.raises(AgeError, match="--age-months"):
        lookup_age(root, image)
    assert any("not at a standard BIDS location" in r.getMessage() for r in caplog.records)


def test_no_age_error_says_how(tmp_path):
    root, image = _dataset(tmp_path, {})
    with pytest.raises(AgeError) as err:
        lookup_age(root, image)
    message = str(err.value)
    assert image.name in message and "participants.tsv" in message and "--age-months" in message


def test_missing_units_is_an_error_naming_the_sidecar(tmp_path):
    root, image = _dataset(tmp_path, {"participants.tsv": "participant_id\tage\nsub-01\t3\n"})
    with pytest.raises(AgeError, match="participants.json"):
        lookup_age(root, image)


def test_duplicate_rows_and_bad_values(tmp_path):
    scans = "sub-01/ses-A/sub-01_ses-A_scans.tsv"
    root, image = _dataset(tmp_path, {scans: "filename\tage_months\nanat/sub-01_ses-A_T1w.nii.gz\t4\n"
                                              "anat/sub-01_ses-A_T1w.nii.gz\t5\n"})
    with pytest.raises(AgeError, match="2 rows"):
        lookup_age(root, image)
    (root / scans).write_text("filename\tage_months\nanat/sub-01_ses-A_T1w.nii.gz\tsix\n")
    with pytest.raises(AgeError, match="not a number"):
        lookup_age(root, image)
    (root / scans).write_text("filename\tage\nanat/sub-01_ses-A_T1w.nii.gz\t6 fortnights\n")
    with pytest.raises(AgeError, match="unknown age unit"):
        lookup_age(root, image)


def test_na_cells_fall_through(tmp_path):
    files = {"sub-01/ses-A/sub-01_ses-A_scans.tsv": "filename\tage_months\nanat/sub-01_ses-A_T1w.nii.gz\tn/a\n",
             "participants.tsv": "participant_id\tage_months\nsub-01\t12\n"}
    root, image = _dataset(tmp_path, files)
    assert lookup_age(root, image).months == 12


def test_value_parsing_and_conversion():
    assert parse_age_value(" 6 ") == (6.0, None)
    assert parse_age_value("6 years ") == (6.0, "years")
    assert parse_age_value("25 gestational weeks") == (25.0, "gestational_weeks")
    assert parse_age_value("") is None
    assert to_months(2, "years") == (24.0, False)
    assert to_months(10, "weeks")[0] == pytest.approx(2.30137)
    months, fetal = to_months(39.9, "gestational_weeks")
    assert fetal and age_group(min(months, -1.0)) == "Fetal"
    with pytest.raises(ValueError):
        to_months(3, None)


def test_override():
    assert age_from_override("fetal").fetal
    assert age_group(age_from_override("fetal").workflow_months) == "Fetal"
    assert age_from_override("adult").months >= 21
    assert age_from_override("7").months == 7 and "--age-months" in age_from_override("7").source


def test_bids_filter_file_validation(tmp_path):
    good = tmp_path / "f.json"
    good.write_text('{"t1w": {"acquisition": "mprage"}}')
    assert load_bids_filters(good) == {"t1w": {"acquisition": "mprage"}}
    for text, match in (("{", "not a readable JSON"), ('{"bold": {}}', "unknown query"),
                        ('{"t1w": 3}', "expected an object")):
        good.write_text(text)
        with pytest.raises(ValueError, match=match):
            load_bids_filters(good)


def test_precomputed_mask_lookup(tmp_path):
    deriv = tmp_path / "deriv/sub-01/anat"
    deriv.mkdir(parents=True)
    mask = deriv / "sub-01_run-2_space-T1w_desc-brain_mask.nii.gz"
    mask.write_bytes(b"")
    (deriv / "sub-01_run-1_space-T1w_desc-brain_mask.nii.gz").write_bytes(b"")
    image = tmp_path / "sub-01_run-2_T1w.nii.gz"
    assert find_precomputed_mask([tmp_path / "deriv"], image, "T1w") == mask
    assert find_precomputed_mask([tmp_path / "deriv"], tmp_path / "sub-02_T1w.nii.gz", "T1w") is None
