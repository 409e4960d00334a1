"""Synthetic full heads around skull-stripped brains (bmex_wf.brainmask.synthetic_head)."""

from __future__ import annotations

import itertools

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from bmex_wf.brainmask.synthetic_head import synthetic_head

from .helpers import distance_from, shared_path


def _ball_brain(shape=(40, 44, 36), radius=10.0, zooms=(2.0, 2.0, 2.0), offset=(0, 0, 0)):
    dist = distance_from(np.array(shape) / 2.0 + np.array(offset), shape)
    data = np.where(dist <= radius, 500.0 + 100.0 * np.cos(dist), 0.0).astype(np.float32)
    affine = np.diag([*zooms, 1.0])
    return nib.Nifti1Image(data, affine)


def _world_com(img, mask):
    return img.affine @ [*ndimage.center_of_mass(mask), 1]


def _layer_medians(head, mask, zooms, bounds):
    dist = ndimage.distance_transform_edt(~mask, sampling=zooms)
    edges = [0.0, *bounds]
    return [float(np.median(head[(dist > lo) & (dist <= hi)])) for lo, hi in itertools.pairwise(edges)]


def test_shells_dark_gap_dark_skull_bright_scalp():
    brain = _ball_brain(shape=(56, 56, 56))
    head_img, mask_img = synthetic_head(brain, seed=3, wobble_mm=0.0, gap_mm=4, skull_mm=6,
                                        scalp_mm=6)
    head = head_img.get_fdata()
    mask = np.asanyarray(mask_img.dataobj) > 0
    assert head_img.shape == brain.shape  # room enough: no padding
    # the true mask is the brain, whose voxels are kept exactly
    assert np.array_equal(mask, brain.get_fdata() > 0)
    assert np.array_equal(head[mask], brain.get_fdata()[mask])
    gap, skull, scalp = _layer_medians(head, mask, (2.0, 2.0, 2.0), [3.0, 9.0, 15.0])
    brain_level = np.median(head[mask])
    assert gap < 0.3 * brain_level
    assert skull < gap
    assert scalp > brain_level
    # air is noisy: never exactly zero, far darker than the brain
    outside = ndimage.distance_transform_edt(~mask, sampling=(2.0, 2.0, 2.0)) > 20
    assert np.count_nonzero(head[outside] == 0) == 0
    assert np.median(head[outside]) < 0.1 * brain_level
    assert head_img.get_data_dtype() == np.float32 and mask_img.get_data_dtype() == np.uint8


def test_seed_changes_head_not_brain():
    brain = _ball_brain()
    a, mask_a = synthetic_head(brain, seed=0)
    b, mask_b = synthetic_head(brain, seed=1)
    again, _ = synthetic_head(brain, seed=0)
    assert np.array_equal(a.get_fdata(), again.get_fdata())
    assert not np.array_equal(a.get_fdata(), b.get_fdata())
    assert np.array_equal(mask_a.get_fdata(), mask_b.get_fdata())


def test_pads_brain_near_border_and_keeps_world_positions():
    brain = _ball_brain(shape=(30, 30, 30), radius=9.0, offset=(5, 0, 0))  # 1 voxel from the edge
    head_img, mask_img = synthetic_head(brain, seed=0)
    assert all(h > b for h, b in zip(head_img.shape, brain.shape))
    assert np.allclose(head_img.affine, mask_img.affine)
    # the brain centre of mass is at the same world position
    com_before = brain.affine @ [*ndimage.center_of_mass(brain.get_fdata() > 0), 1]
    com_after = mask_img.affine @ [*ndimage.center_of_mass(mask_img.get_fdata() > 0), 1]
    assert np.allclose(com_before, com_after, atol=1e-6)
    # the scalp fits inside the padded array: the border is air
    head = head_img.get_fdata()
    assert head[0].max() < 0.5 * np.median(head[mask_img.get_fdata() > 0])


def test_rejects_empty_brain():
    with pytest.raises(ValueError, match="non-empty"):
        synthetic_head(nib.Nifti1Image(np.zeros((8, 8, 8), np.float32), np.eye(4)))


def test_head_around_shared_brain_keeps_geometry():
    path = shared_path("data", "test_BIDS", "sub-0009", "ses-V01", "anat", "sub-0009_ses-V01_T2w.nii.gz")
    brain = nib.load(path)
    head_img, mask_img = synthetic_head(brain, seed=0)
    mask = np.asanyarray(mask_img.dataobj) > 0
    # same orientation and voxel size; the brain keeps its world position
    assert nib.aff2axcodes(head_img.affine) == nib.aff2axcodes(brain.affine)
    assert np.allclose(head_img.header.get_zooms()[:3], brain.header.get_zooms()[:3])
    assert np.allclose(_world_com(brain, np.asanyarray(brain.dataobj) != 0),
                       _world_com(mask_img, mask), atol=0.5)
    head = head_img.get_fdata()
    assert (head > 0).mean() > 0.99  # a head has no exact-zero background
    assert mask.sum() >= np.count_nonzero(np.asanyarray(brain.dataobj))
