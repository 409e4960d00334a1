"""Registration to a template (antspyx): known transforms, real brains, transform files."""

from __future__ import annotations

from pathlib import Path

import h5py
import nibabel as nb
import numpy as np
import pytest

from bmex_wf.spaces.registration import (
    RegistrationError,
    apply_transforms,
    register_to_template,
    registration_args,
)

from .helpers import rotation
from .templateflow_local import TEMPLATE, build_templateflow_home

pytest.importorskip("ants")


def _dice(a, b) -> float:
    a, b = np.asanyarray(a.dataobj) > 0, np.asanyarray(b.dataobj) > 0
    return 2 * (a & b).sum() / (a.sum() + b.sum())


def _downsampled(img, factor=2):
    """``img`` on a grid ``factor`` times coarser (block means; a cheap real template)."""
    data = np.asanyarray(img.dataobj).astype(np.float32)
    shape = [s // factor * factor for s in data.shape]
    data = data[: shape[0], : shape[1], : shape[2]]
    blocks = data.reshape(shape[0] // factor, factor, shape[1] // factor, factor,
                          shape[2] // factor, factor).mean(axis=(1, 3, 5))
    affine = img.affine.copy()
    affine[:3, :3] *= factor
    affine[:3, 3] += img.affine[:3, :3] @ np.full(3, (factor - 1) / 2)
    return nb.Nifti1Image(blocks, affine)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """The local MNI152NLin2009aSym T1w and brain mask, on a 2 mm grid."""
    folder = build_templateflow_home(tmp_path_factory.mktemp("tf")) / f"tpl-{TEMPLATE}"
    image = _downsampled(nb.load(folder / f"tpl-{TEMPLATE}_res-1_T1w.nii.gz"))
    mask = _downsampled(nb.load(folder / f"tpl-{TEMPLATE}_res-1_desc-brain_mask.nii.gz"))
    mask = nb.Nifti1Image((mask.get_fdata() > 0.5).astype(np.uint8), mask.affine)
    return image, mask


@pytest.fixture(scope="module")
def subject(bids_dir):
    """A real skull-stripped 6-year-old T1w (0.8 mm, oblique) and its brain mask, at 1.6 mm."""
    img = nb.load(bids_dir / "sub-0001" / "ses-V01" / "anat" / "sub-0001_ses-V01_T1w.nii.gz")
    brain = _downsampled(img)
    mask = nb.Nifti1Image((brain.get_fdata() > 0).astype(np.uint8), brain.affine)
    return brain, mask


@pytest.fixture(scope="module")
def affine_run(subject, template, tmp_path_factory):
    brain, mask = subject
    fixed, fixed_mask = template
    return register_to_template(brain, fixed, out_dir=tmp_path_factory.mktemp("affine"),
                                moving_mask=mask, fixed_mask=fixed_mask, transform="Affine",
                                spacing_mm=4, iterations="quick")


def test_known_rigid_motion_is_recovered(template, tmp_path):
    """The template moved by a known rigid transform (header only) is registered back."""
    nitransforms = pytest.importorskip("nitransforms")
    fixed, fixed_mask = template
    motion = rotation(10, 2) @ rotation(6, 0)
    motion[:3, 3] = [6, -4, 8]
    moving = nb.Nifti1Image(fixed.get_fdata().astype(np.float32), motion @ fixed.affine)
    result = register_to_template(moving, fixed, out_dir=tmp_path, transform="Affine",
                                  spacing_mm=4, iterations="quick")
    inside = np.argwhere(np.asanyarray(fixed_mask.dataobj) > 0)[::20]
    points = nb.affines.apply_affine(fixed.affine, inside)
    expected = nb.affines.apply_affine(motion, points)
    forward = nitransforms.manip.load(result.forward_transforms[0], fmt="itk")
    inverse = nitransforms.manip.load(result.inverse_transforms[0], fmt="itk")
    error = np.linalg.norm(forward.map(points) - expected, axis=1)
    assert error.mean() < 0.5 and error.max() < 1.0, error.mean()
    assert np.linalg.norm(expected - points, axis=1).mean() > 10  # the motion was not small
    assert np.linalg.norm(inverse.map(expected) - points, axis=1).mean() < 0.5
    assert np.corrcoef(result.warped.get_fdata().ravel(), fixed.get_fdata().ravel())[0, 1] > 0.99


def test_real_brain_affine_mask_dice(subject, template, affine_run):
    _, mask = subject
    fixed, fixed_mask = template
    warped_mask = apply_transforms(mask, fixed_mask, affine_run.forward_transforms,
                                   interpolation="nearestNeighbor")
    assert warped_mask.get_data_dtype() == np.uint8
    assert np.allclose(warped_mask.affine, fixed.affine) and warped_mask.shape == fixed.shape
    # negative control: the same mask resampled with no registration
    identity = apply_transforms(mask, fixed_mask, [], interpolation="nearestNeighbor")
    registered, unregistered = _dice(warped_mask, fixed_mask), _dice(identity, fixed_mask)
    assert registered > 0.85, registered
    assert registered > unregistered + 0.05, (registered, unregistered)
    # and back: the template mask in the subject's space
    back = apply_transforms(fixed_mask, mask, affine_run.inverse_transforms,
                            interpolation="nearestNeighbor")
    assert _dice(back, mask) > 0.85


def test_transform_files_read_by_nitransforms(subject, template, affine_run):
    nitransforms = pytest.importorskip("nitransforms")
    brain, _ = subject
    fixed, _ = template
    with h5py.File(affine_run.forward_transforms[0]) as h5:
        kinds = [h5["TransformGroup"][k]["TransformType"][0].decode()
                 for k in h5["TransformGroup"]]
    assert kinds[0].startswith("CompositeTransform") and kinds[1].startswith("AffineTransform")
    chain = nitransforms.manip.load(affine_run.forward_transforms[0], fmt="itk")
    by_nitransforms = nitransforms.resampling.apply(chain, brain, reference=fixed, order=1)
    ours = affine_run.warped.get_fdata()
    theirs = np.asanyarray(by_nitransforms.dataobj)
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.999
    assert np.abs(ours - theirs).mean() < 1e-3 * np.abs(ours).max()


def test_syn_composite_with_displacement_field(subject, template, affine_run, tmp_path):
    nitransforms = pytest.importorskip("nitransforms")
    brain, mask = subject
    fixed, fixed_mask = template
    result = register_to_template(brain, fixed, out_dir=tmp_path, moving_mask=mask,
                                  fixed_mask=fixed_mask, transform="SyN", spacing_mm=6,
                                  iterations="quick", num_threads=2)
    with h5py.File(result.forward_transforms[0]) as h5:
        kinds = [h5["TransformGroup"][k]["TransformType"][0].decode()
                 for k in h5["TransformGroup"]]
    assert any(k.startswith("DisplacementFieldTransform") for k in kinds), kinds
    chain = nitransforms.manip.load(result.forward_transforms[0], fmt="itk")
    theirs = np.asanyarray(nitransforms.resampling.apply(chain, brain, reference=fixed,
                                                         order=1).dataobj)
    ours = result.warped.get_fdata()
    assert np.corrcoef(ours.ravel(), theirs.ravel())[0, 1] > 0.99
    # the deformable stage matches the template better than the affine registration alone
    inside = np.asanyarray(fixed_mask.dataobj) > 0
    target = fixed.get_fdata()[inside]
    syn_r = np.corrcoef(ours[inside], target)[0, 1]
    affine_r = np.corrcoef(affine_run.warped.get_fdata()[inside], target)[0, 1]
    assert syn_r > affine_r, (syn_r, affine_r)
    warped_mask = apply_transforms(mask, fixed_mask, result.forward_transforms,
                                   interpolation="nearestNeighbor")
    affine_mask = apply_transforms(mask, fixed_mask, affine_run.forward_transforms,
                                   interpolation="nearestNeighbor")
    assert _dice(warped_mask, fixed_mask) > _dice(affine_mask, fixed_mask)


def test_same_seed_same_transform(subject, template, tmp_path, monkeypatch):
    brain, _ = subject
    fixed, _ = template
    # ITK in this process already runs multi-threaded, as after any earlier ANTs call
    import ants

    monkeypatch.setenv("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", "4")
    ants.resample_image(ants.from_numpy(np.ones((8, 8, 8), np.float32)), (2, 2, 2))

    def params(folder):
        result = register_to_template(brain, fixed, out_dir=tmp_path / folder,
                                      transform="Rigid", spacing_mm=6, iterations="quick",
                                      seed=7)
        with h5py.File(result.forward_transforms[0]) as h5:
            return np.asarray(h5["TransformGroup"]["1"]["TransformParameters"])

    np.testing.assert_array_equal(params("a"), params("b"))


def test_bad_arguments(subject, template, tmp_path):
    brain, mask = subject
    fixed, _ = template
    with pytest.raises(RegistrationError, match="unknown transform"):
        registration_args("f.nii", "m.nii", "p_", transform="BSpline", iterations="quick",
                          seed=0)
    with pytest.raises(RegistrationError, match="unknown iterations"):
        registration_args("f.nii", "m.nii", "p_", transform="SyN", iterations="slow", seed=0)
    with pytest.raises(RegistrationError, match="not on the grid"):
        register_to_template(brain, fixed, out_dir=tmp_path, fixed_mask=mask)
    with pytest.raises(RegistrationError, match="transform file not found"):
        apply_transforms(brain, fixed, [Path(tmp_path / "missing.h5")])
