"""``bmex-wf demo``: the degraded MNI152 dataset and the end-to-end run."""

from __future__ import annotations

import json

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


@pytest.mark.slow
def test_demo_end_to_end(tmp_path, capsys):
    assert demo.main([str(tmp_path / "out"), "--nprocs", "2"]) == 0
    report = capsys.readouterr().out.strip().splitlines()[-1]
    assert report.startswith("Report: ") and report.endswith("sub-01.html")
    derivatives = tmp_path / "out" / "derivatives"
    enhanced = sorted(derivatives.glob("sub-01/anat/*desc-enhanced*_T1w.nii.gz"))
    assert enhanced and nib.load(enhanced[0]).shape == (197, 233, 189)
