"""Brain-mask sources and the auto choice (bmex_wf.brainmask)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bmex_wf import brainmask as bm
from bmex_wf.brainmask.synthetic_head import synthetic_head
from bmex_wf.image.morphology import clean_mask, fill_small_holes

from .helpers import distance_from, shared_path

SHARED_IMAGES = [
    ("sub-0001", "ses-V01", "T1w"), ("sub-0001", "ses-V02", "T1w"), ("sub-0002", "ses-V01", "T1w"),
    ("sub-0003", "ses-V01", "T1w"), ("sub-0004", "ses-V01", "T1w"), ("sub-0005", "ses-V01", "T1w"),
    ("sub-0006", "ses-V01", "T1w"), ("sub-0007", "ses-V01", "T1w"), ("sub-0008", "ses-V01", "T1w"),
    ("sub-0009", "ses-V01", "T2w"),
]


def _shared(sub, ses, suffix, step=1):
    """A shared skull-stripped image, optionally subsampled by ``step`` (exact zeros kept)."""
    path = shared_path("data", "test_BIDS", sub, ses, "anat", f"{sub}_{ses}_{suffix}.nii.gz")
    img = nib.load(path)
    if step == 1:
        return img
    data = np.asanyarray(img.dataobj)[::step, ::step, ::step]
    affine = img.affine.copy()
    affine[:3, :3] *= step
    return nib.Nifti1Image(data, affine)


def _dice(a, b) -> float:
    a, b = np.asarray(a) > 0, np.asarray(b) > 0
    return 2.0 * (a & b).sum() / (a.sum() + b.sum())


def _ball(shape=(40, 40, 40), radius=12.0, centre=None):
    return distance_from(np.array(shape) / 2.0 if centre is None else centre, shape) <= radius


@pytest.fixture
def no_default_models(monkeypatch, tmp_path):
    monkeypatch.delenv("BMEX_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


# ----------------------------------------------------------------------------- cleaning
def test_clean_mask_keeps_largest_component_and_fills_holes():
    mask = _ball()
    mask[20, 20, 20] = False
    mask[18:23, 18:23, 18:23] = False  # enclosed cavity
    mask[1:4, 1:4, 1:4] = True         # speck
    clean = clean_mask(mask)
    assert np.array_equal(clean, _ball())


def test_fill_small_holes_fills_single_voxels_only():
    mask = _ball()
    mask[20, 20, 20] = False
    mask[15:17, 20, 20] = False  # two-voxel hole
    filled = fill_small_holes(mask, max_size=1)
    assert filled[20, 20, 20] and not filled[15, 20, 20]


def test_nonzero_mask_of_a_skull_stripped_volume():
    data = np.where(_ball(), 100.0, 0.0).astype(np.float32)
    data[20, 20, 20] = 0.0     # dark voxel inside the brain
    data[2, 2, 2] = 5.0        # stray voxel
    img = nib.Nifti1Image(data, np.diag([1.5, 1.5, 1.5, 1.0]))
    out = bm.nonzero_mask(img)
    assert np.array_equal(np.asanyarray(out.dataobj) > 0, _ball())
    assert out.get_data_dtype() == np.uint8 and np.allclose(out.affine, img.affine)
    with pytest.raises(bm.BrainMaskError, match="no non-zero voxel"):
        bm.nonzero_mask(nib.Nifti1Image(np.zeros((5, 5, 5), np.float32), np.eye(4)))


# ----------------------------------------------------------------------------- detection
@pytest.mark.parametrize("sub,ses,suffix", SHARED_IMAGES)
def test_shared_brains_look_skull_stripped(sub, ses, suffix):
    img = _shared(sub, ses, suffix, step=2)
    assert bm.looks_skull_stripped(img), bm.skull_stripped_evidence(img)


@pytest.mark.parametrize("sub,ses,suffix", [SHARED_IMAGES[2], SHARED_IMAGES[8], SHARED_IMAGES[9]])
def test_synthetic_heads_do_not_look_skull_stripped(sub, ses, suffix):
    head, _ = synthetic_head(_shared(sub, ses, suffix, step=2), seed=2)
    assert not bm.looks_skull_stripped(head)
    # even with the air set to exactly zero, the bright scalp over a dark skull gives it away
    quiet, _ = synthetic_head(_shared(sub, ses, suffix, step=2), seed=2, noise=0.0)
    data = quiet.get_fdata(dtype=np.float32)
    data[data == data[0, 0, 0]] = 0.0
    zero_air = nib.Nifti1Image(data, quiet.affine)
    evidence = bm.skull_stripped_evidence(zero_air)
    assert evidence["zero_fraction"] > 0.3 and evidence["faces_touched"] == 0
    assert evidence["rim_ratio"] >= 2.0
    assert not bm.looks_skull_stripped(zero_air, evidence)


# ----------------------------------------------------------------------------- precomputed
def test_precomputed_mask_on_another_grid_is_resampled(tmp_path):
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = -20.0
    img = nib.Nifti1Image(np.random.default_rng(0).random((40, 40, 40)).astype(np.float32),
                          affine)
    truth = _ball()
    # the mask is stored at 2 mm, flipped along x (another orientation and grid)
    coarse = truth[::2, ::2, ::2][::-1]
    mask_affine = np.diag([-2.0, 2.0, 2.0, 1.0])
    mask_affine[:3, 3] = [-20.0 + 38.5, -19.5, -19.5]
    nib.Nifti1Image(coarse.astype(np.uint8), mask_affine).to_filename(str(tmp_path / "m.nii.gz"))
    out = bm.precomputed_mask(str(tmp_path / "m.nii.gz"), img)
    assert out.shape == img.shape and np.allclose(out.affine, img.affine)
    assert _dice(out.dataobj, truth) > 0.9


def test_precomputed_mask_errors(tmp_path):
    img = nib.Nifti1Image(np.ones((10, 10, 10), np.float32), np.eye(4))
    empty = tmp_path / "empty.nii.gz"
    nib.Nifti1Image(np.zeros((10, 10, 10), np.uint8), np.eye(4)).to_filename(str(empty))
    with pytest.raises(ValueError, match="empty.nii.gz: mask is empty"):
        bm.precomputed_mask(str(empty), img)
    text = tmp_path / "mask.nii.gz"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="mask.nii.gz"):
        bm.precomputed_mask(str(text), img)
    with pytest.raises(bm.SourceUnavailable, match="missing.nii.gz: mask file not found"):
        bm.precomputed_mask(str(tmp_path / "missing.nii.gz"), img)
    with pytest.raises(bm.SourceUnavailable, match="needs an input mask"):
        bm.compute_brain_mask(img, "precomputed")


# ----------------------------------------------------------------------------- auto + template
def test_auto_choice(tmp_path, no_default_models):
    brain = _shared("sub-0009", "ses-V01", "T2w")
    head, _ = synthetic_head(brain, seed=0)
    assert bm.choose_source(brain)[0] == "nonzero"
    assert bm.choose_source(head)[0] == "template"
    assert bm.choose_source(head, in_mask="m.nii.gz")[0] == "precomputed"
    (tmp_path / "T1T2w-model.pt").write_bytes(b"x")
    for name in ("template.hdr", "template.img"):
        (tmp_path / name).write_bytes(b"x")
    assert bm.choose_source(head, models_dir=tmp_path)[0] == "lifespanstrip"
    assert bm.choose_source(brain, models_dir=tmp_path)[0] == "nonzero"
    mask, used = bm.compute_brain_mask(brain)
    assert used == "nonzero"
    assert np.array_equal(np.asanyarray(mask.dataobj) > 0,
                          clean_mask(np.asanyarray(brain.dataobj) != 0))
    with pytest.raises(bm.BrainMaskError, match="unknown mask source 'skull'"):
        bm.compute_brain_mask(brain, "skull")


def test_template_mask_on_synthetic_head():
    """Registered MNI152 mask, refined, against the true brain of a synthetic head."""
    from bmex_wf.image.resample import resample_to_spacing

    small = resample_to_spacing(_shared("sub-0004", "ses-V01", "T1w", step=2), 2.0)
    data = small.get_fdata(dtype=np.float32)
    data[data < 1e-3 * data.max()] = 0
    head, truth = synthetic_head(nib.Nifti1Image(data, small.affine), seed=5)
    out = bm.template_mask(head)
    assert out.shape == head.shape and np.allclose(out.affine, head.affine)
    assert _dice(out.dataobj, truth.dataobj) > 0.9


@pytest.mark.parametrize("grow_mm", [-4.0, 6.0, 12.0])
def test_refine_mask_recovers_brain_from_a_misfit_mask(grow_mm):
    """A registered mask too small or reaching into the skull/scalp is pulled to the brain."""
    from scipy import ndimage

    grid = np.indices((48, 48, 48)).astype(float)
    dist = np.sqrt(sum((g - 23.5) ** 2 for g in grid))
    brain = nib.Nifti1Image(np.where(dist <= 11, 500.0 + 80.0 * np.cos(dist), 0.0)
                            .astype(np.float32), np.diag([2.0, 2.0, 2.0, 1.0]))
    head, truth = synthetic_head(brain, seed=4)
    truth = np.asanyarray(truth.dataobj) > 0
    outside = ndimage.distance_transform_edt(~truth, sampling=2.0)
    inside = ndimage.distance_transform_edt(truth, sampling=2.0)
    misfit = outside <= grow_mm if grow_mm > 0 else inside > -grow_mm
    refined = bm.refine_mask(head.get_fdata(dtype=np.float32), misfit, (2.0, 2.0, 2.0))
    assert _dice(refined, truth) > 0.95
    assert _dice(misfit, truth) < 0.9
