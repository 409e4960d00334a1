"""``bmex-wf demo``: the degraded MNI152 dataset and the end-to-end run."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bmex_wf.cli import demo


@pytest.fixture(scope="module")
def demo_dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    assert demo.main([str(out), "--build-only"]) == 0
    assert not (out / "derivatives").exists()
    return out / "bids", out / "bids" / "sub-01" / "anat" / "sub-01_T1w.nii.gz"


def test_demo_dataset_is_bids_with_an_adult(demo_dataset):
    from bmex_wf.age import age_group
    from bmex_wf.bids.ages import lookup_age
    from bmex_wf.bids.inputs import find_images

    bids, image = demo_dataset
    assert json.loads((bids / "dataset_description.json").read_text())["BIDSVersion"]
    (found,) = find_images(bids)
    assert found["path"] == image and found["contrast"] == "T1w" and found["subject"] == demo.SUBJECT
    age = lookup_age(bids, image)
    assert not age.fetal and age_group(age.months) == "Month24"


def test_demo_image_is_a_degraded_skull_stripped_mni152(demo_dataset):
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    _, image = demo_dataset
    img = nib.load(image)
    template = load_mni152_template(resolution=1)
    assert img.shape == template.shape and np.allclose(img.affine, template.affine)
    assert img.get_data_dtype() == np.int16
    data = np.asarray(img.dataobj, dtype=np.float32)
    mask = np.asarray(load_mni152_brain_mask(resolution=1).dataobj) > 0
    assert not data[~mask].any()
    clean = np.asarray(template.get_fdata(), dtype=np.float32) * mask
    clean *= 1000.0 / clean.max()
    error = np.sqrt(np.mean((data[mask] - clean[mask]) ** 2))
    assert 10 < error < 200  # visibly degraded, still the same brain
    assert np.corrcoef(data[mask], clean[mask])[0, 1] > 0.8


def test_demo_scores_its_run_and_shows_them(tmp_path, capsys, monkeypatch):
    """After the BIDS App (here a stand-in writing ideal outputs) the demo scores and reports."""
    from bmex_wf.cli import participant
    from bmex_wf.reports.demo_scores import SCORES_NAME

    from .test_demo_scores import fake_demo_outputs

    def fake_bids_app(args):
        derivatives = Path(args[1])
        fake_demo_outputs(derivatives)
        (derivatives / "sub-01" / "figures").mkdir()
        (derivatives / "sub-01.html").write_text("<html>first report</html>")
        return 0

    monkeypatch.setattr(participant, "bids_app_main", fake_bids_app)
    assert demo.main([str(tmp_path / "out")]) == 0
    report, summary = capsys.readouterr().out.strip().splitlines()[-2:]
    page = tmp_path / "out" / "derivatives" / "sub-01.html"
    assert report == f"Report: {page}"
    assert summary.startswith("Distance to the clean MNI152 (input -> enhanced): fitted PSNR ")
    assert "GM Dice 1.000" in summary and "WM Dice 1.000" in summary
    scores = json.loads((tmp_path / "out" / "derivatives" / "sub-01" / "anat" / SCORES_NAME).read_text())
    assert scores["enhanced"]["fitted_psnr_db"] > scores["input"]["fitted_psnr_db"]
    assert "Demo: distance to the clean MNI152" in page.read_text()  # the report was rebuilt


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    assert demo.main([str(tmp_path / "out"), "--nprocs", "2"]) == 0
    report, summary = capsys.readouterr().out.strip().splitlines()[-2:]
    assert report.startswith("Report: ") and report.endswith("sub-01.html")
    assert summary.startswith("Distance to the clean MNI152")
    derivatives = tmp_path / "out" / "derivatives"
    enhanced = sorted(derivatives.glob("sub-01/anat/*desc-enhanced*_T1w.nii.gz"))
    assert enhanced and nib.load(enhanced[0]).shape == (197, 233, 189)
    assert (derivatives / "sub-01" / "anat" / "demo_scores.json").is_file()
    assert "Demo: distance to the clean MNI152" in (derivatives / "sub-01.html").read_text()
