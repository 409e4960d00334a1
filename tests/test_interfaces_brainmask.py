"""BrainMask Nipype interface."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bmex_wf.brainmask.synthetic_head import synthetic_head
from bmex_wf.image.morphology import clean_mask
from bmex_wf.interfaces.brainmask import BrainMask

from .helpers import distance_from, rule_network, shared_path


@pytest.fixture
def no_default_models(monkeypatch, tmp_path):
    monkeypatch.delenv("BMEX_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def fetal_brain():
    return shared_path("data", "test_BIDS", "sub-0009", "ses-V01", "anat",
                       "sub-0009_ses-V01_T2w.nii.gz")


def _ball_head(tmp_path):
    dist = distance_from((21.0, 20.0, 18.0), (40, 44, 36))
    brain = nib.Nifti1Image(np.where(dist <= 9, 600.0, 0.0).astype(np.float32),
                            np.diag([2.5, 2.5, 2.5, 1.0]))
    head, truth = synthetic_head(brain, seed=0)
    head.to_filename(str(tmp_path / "head.nii.gz"))
    return str(tmp_path / "head.nii.gz"), truth


def test_auto_on_skull_stripped_brain_records_nonzero(fetal_brain, tmp_path, no_default_models):
    result = BrainMask(in_file=str(fetal_brain)).run(cwd=str(tmp_path))
    assert result.outputs.source_used == "nonzero"
    out = nib.load(result.outputs.out_mask)
    img = nib.load(fetal_brain)
    assert out.shape == img.shape and np.allclose(out.affine, img.affine)
    assert out.get_data_dtype() == np.uint8
    assert np.array_equal(np.asanyarray(out.dataobj) > 0,
                          clean_mask(np.asanyarray(img.dataobj) != 0))
    assert result.outputs.out_mask.startswith(str(tmp_path))


def test_precomputed_mask_is_used_by_auto(tmp_path, no_default_models):
    head, truth = _ball_head(tmp_path)
    truth.to_filename(str(tmp_path / "truth.nii.gz"))
    result = BrainMask(in_file=head, in_mask=str(tmp_path / "truth.nii.gz")).run(
        cwd=str(tmp_path))
    assert result.outputs.source_used == "precomputed"
    assert np.array_equal(nib.load(result.outputs.out_mask).get_fdata(), truth.get_fdata())


def test_lifespanstrip_source_with_small_network(tmp_path, no_default_models):
    from bmex_wf.models.checkpoints import save_network

    models = tmp_path / "models"
    save_network(rule_network("skullstrip"), models / "T1T2w-model.pt")
    template = np.random.default_rng(0).gamma(2.0, 200.0, size=(24, 28, 24)).astype(np.int16)
    nib.AnalyzeImage(template, np.diag([6.0, 6.0, 6.0, 1.0])).to_filename(
        str(models / "template.hdr"))
    head, _ = _ball_head(tmp_path)
    result = BrainMask(in_file=head, models_dir=str(models), num_threads=1).run(
        cwd=str(tmp_path))
    assert result.outputs.source_used == "lifespanstrip"
    out = nib.load(result.outputs.out_mask)
    assert out.shape == nib.load(head).shape
    assert set(np.unique(np.asanyarray(out.dataobj))) <= {0, 1}


def test_missing_lifespanstrip_is_a_clear_error(tmp_path, no_default_models):
    head, _ = _ball_head(tmp_path)
    with pytest.raises(ValueError, match="T1T2w-model.pt: LifespanStrip weights not found"):
        BrainMask(in_file=head, source="lifespanstrip", models_dir=str(tmp_path)).run(
            cwd=str(tmp_path))
    assert not list(tmp_path.glob("*_brainmask.nii.gz"))


def test_resource_inputs_do_not_change_the_hash(tmp_path):
    head, _ = _ball_head(tmp_path)
    a = BrainMask(in_file=head, num_threads=1, use_gpu=False)
    b = BrainMask(in_file=head, num_threads=4, use_gpu=True)
    assert a.inputs.get_hashval()[1] == b.inputs.get_hashval()[1]
    c = BrainMask(in_file=head, source="template")
    assert a.inputs.get_hashval()[1] != c.inputs.get_hashval()[1]
    spec = BrainMask.input_spec()
    for name in ("in_file", "in_mask", "source", "models_dir", "num_threads", "use_gpu"):
        assert spec.trait(name).desc
    assert spec.trait("num_threads").nohash and spec.trait("use_gpu").nohash
