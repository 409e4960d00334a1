"""World-consistent resampling (linear and nearest) and the release's grid rules."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine, voxel_sizes

from bmex_wf.image.resample import (
    centered_grid,
    resample_centered,
    resample_to_grid,
    resample_to_reference,
    resample_to_spacing,
    sitk_affine,
    to_sitk,
)

from .helpers import rotation as _rotation
from .helpers import shared_path


def _affine(shape, zooms, centre, rotations=(), flips=(1, 1, 1), perm=(0, 1, 2)) -> np.ndarray:
    """Affine of a grid whose centre lies at world ``centre``."""
    affine = np.eye(4)
    affine[:3, :3] = np.eye(3)[:, list(perm)] @ np.diag(np.multiply(zooms, flips))
    for degrees, axis in rotations:
        affine = _rotation(degrees, axis) @ affine
    affine[:3, 3] = np.asarray(centre) - affine[:3, :3] @ (np.asarray(shape) - 1) / 2
    return affine


def _world(shape, affine) -> np.ndarray:
    return apply_affine(affine, np.indices(shape).reshape(3, -1).T).reshape(*shape, 3)


def _linear(world):
    return 0.7 * world[..., 0] - 0.3 * world[..., 1] + 0.45 * world[..., 2] + 100.0


def _smooth(world):
    return np.sin(world[..., 0] / 9.0) * np.cos(world[..., 1] / 11.0) + np.sin(world[..., 2] / 13.0)


def _inside(src_shape, src_affine, dst_shape, dst_affine, margin=0.0):
    """Target voxels whose source position lies within the source voxel centres."""
    ijk = apply_affine(np.linalg.inv(src_affine) @ dst_affine,
                       np.indices(dst_shape).reshape(3, -1).T).reshape(*dst_shape, 3)
    return np.all((ijk >= margin) & (ijk <= np.array(src_shape) - 1 - margin), axis=-1)


# source grid (oblique, anisotropic 1x1x3 mm) -> target grid (another obliquity / orientation)
GRIDS = [
    ((40, 44, 16), _affine((40, 44, 16), (1, 1, 3), (0, 5, -10), [(26, 2), (-10, 0)]),
     (48, 52, 56), _affine((48, 52, 56), (0.8, 0.8, 0.8), (3, 2, -8), [(-14, 1)],
                           flips=(-1, -1, 1))),
    ((40, 44, 16), _affine((40, 44, 16), (1, 1, 3), (0, 5, -10), [(26, 2)], perm=(2, 0, 1)),
     (30, 34, 38), _affine((30, 34, 38), (1.1, 0.9, 1.3), (1, 4, -9), [(33, 0)],
                           flips=(-1, -1, 1), perm=(1, 0, 2))),
    ((36, 36, 36), _affine((36, 36, 36), (0.8, 0.8, 0.8), (0, 0, 0)),
     (14, 14, 12), _affine((14, 14, 12), (1, 1, 3), (2, -1, 1), [(20, 2), (15, 1)])),
]


@pytest.mark.parametrize(("src_shape", "src_aff", "dst_shape", "dst_aff"), GRIDS)
def test_linear_reproduces_a_linear_function_of_world(src_shape, src_aff, dst_shape, dst_aff):
    src = nib.Nifti1Image(_linear(_world(src_shape, src_aff)).astype(np.float32), src_aff)
    ref = nib.Nifti1Image(np.zeros(dst_shape, np.uint8), dst_aff)
    out = resample_to_reference(src, ref, order=1)
    assert out.shape == dst_shape and np.allclose(out.affine, dst_aff, atol=1e-4)
    assert out.get_data_dtype() == np.float32
    inside = _inside(src_shape, src_aff, dst_shape, dst_aff)
    assert inside.mean() > 0.2
    expected = _linear(_world(dst_shape, dst_aff))
    np.testing.assert_allclose(np.asanyarray(out.dataobj)[inside], expected[inside], atol=2e-3)
    far = ~_inside(src_shape, src_aff, dst_shape, dst_aff, margin=-1.0)
    assert np.all(np.asanyarray(out.dataobj)[far] == 0)


@pytest.mark.parametrize(("src_shape", "src_aff", "dst_shape", "dst_aff"), GRIDS)
def test_linear_follows_a_smooth_function_of_world(src_shape, src_aff, dst_shape, dst_aff):
    src = nib.Nifti1Image(_smooth(_world(src_shape, src_aff)), src_aff)
    out = resample_to_grid(src, dst_shape, dst_aff, order=1)
    inside = _inside(src_shape, src_aff, dst_shape, dst_aff)
    err = np.abs(np.asanyarray(out.dataobj) - _smooth(_world(dst_shape, dst_aff)))[inside]
    assert err.max() < 0.05  # interpolation error for 3 mm voxels; a mirrored axis gives ~1


@pytest.mark.parametrize(("src_shape", "src_aff", "dst_shape", "dst_aff"), GRIDS)
def test_nearest_takes_the_nearest_source_voxel(src_shape, src_aff, dst_shape, dst_aff):
    labels = np.arange(np.prod(src_shape), dtype=np.int32).reshape(src_shape)
    out = resample_to_grid(nib.Nifti1Image(labels, src_aff), dst_shape, dst_aff, order=0)
    assert out.get_data_dtype() == np.int32
    ijk = apply_affine(np.linalg.inv(src_aff) @ dst_aff,
                       np.indices(dst_shape).reshape(3, -1).T).reshape(*dst_shape, 3)
    clear = np.all(np.abs(ijk - np.round(ijk)) < 0.45, axis=-1)  # away from ties
    clear &= _inside(src_shape, src_aff, dst_shape, dst_aff)
    idx = np.round(ijk[clear]).astype(int)
    expected = labels[idx[:, 0], idx[:, 1], idx[:, 2]]
    assert np.array_equal(np.asanyarray(out.dataobj)[clear], expected)


def test_spacing_rule_keeps_origin_and_direction():
    affine = _affine((11, 10, 9), (1, 1, 3), (-20, -25, -22), [(26, 2)], flips=(-1, 1, 1))
    img = nib.Nifti1Image(np.ones((11, 10, 9), np.uint8), affine)
    out = resample_to_spacing(img, 0.8, order=0)
    assert out.shape == (14, 12, 34)  # round(11/0.8)=14, round(12.5)=12, round(33.75)=34
    np.testing.assert_allclose(voxel_sizes(out.affine), 0.8, atol=1e-6)
    np.testing.assert_allclose(out.affine[:3, 3], affine[:3, 3], atol=1e-5)
    np.testing.assert_allclose(out.affine[:3, :3] / 0.8, affine[:3, :3] / [1, 1, 3], atol=1e-6)
    assert out.get_data_dtype() == np.uint8
    fetal = resample_to_spacing(img, 0.75)
    assert fetal.shape == (15, 13, 36) and fetal.get_data_dtype() == np.float32
    with pytest.raises(ValueError, match="positive"):
        resample_to_spacing(img, 0)
    with pytest.raises(ValueError, match="order"):
        resample_to_spacing(img, 0.8, order=3)


def test_centered_rule_matches_the_release():
    affine = _affine((101, 96, 87), (0.8, 0.8, 0.8), (10, -20, 30), [(12, 1)])
    img = nib.Nifti1Image(np.ones((101, 96, 87), np.float32), affine)
    shape, grid = centered_grid(img, 1.6)
    assert shape == (50, 48, 43)  # floor(size * 0.8 / 1.6)
    # the release's origin, along the image's own axes (identity direction there)
    offset = np.array([101, 96, 87]) * 0.8 / 2 - np.array(shape) * 1.6 / 2
    unit = affine[:3, :3] / 0.8
    np.testing.assert_allclose(grid[:3, 3], affine[:3, 3] + unit @ offset, atol=1e-9)
    np.testing.assert_allclose(grid[:3, :3], unit * 1.6, atol=1e-12)
    out = resample_centered(img, 1.6)
    assert out.shape == shape and np.allclose(out.affine, grid, atol=1e-4)


def test_sitk_conversion_keeps_the_world_geometry():
    affine = _affine((5, 6, 7), (1, 1.2, 3), (-20, -25, -22), [(26, 2), (-10, 0)], perm=(2, 0, 1))
    data = np.random.default_rng(1).random((5, 6, 7)).astype(np.float32)
    image = to_sitk(nib.Nifti1Image(data, affine))
    np.testing.assert_allclose(sitk_affine(image), affine, atol=1e-12)
    # SimpleITK's world (LPS) of voxel (1, 2, 3) is nibabel's (RAS) with x and y negated
    world = np.array(image.TransformIndexToPhysicalPoint((1, 2, 3)))
    np.testing.assert_allclose(world * [-1, -1, 1], apply_affine(affine, (1, 2, 3)), atol=1e-9)


def test_real_image_identity_and_round_trip(tmp_path):
    """On a real oblique scan: the identity grid changes nothing, 0.75 mm and back is close."""
    src = shared_path("data", "test_BIDS", "sub-0002", "ses-V01", "anat",
                      "sub-0002_ses-V01_T1w.nii.gz")
    small = nib.load(src).slicer[100:180, 90:170, 110:190]
    img = nib.Nifti1Image(np.asanyarray(small.dataobj), small.affine, small.header)
    data = np.asanyarray(img.dataobj).astype(np.float32)
    same = resample_to_reference(img, img, order=1)
    np.testing.assert_allclose(np.asanyarray(same.dataobj), data, atol=1e-2)
    for code in ("qform_code", "sform_code"):
        assert same.header[code] == img.header[code]
    fine = resample_to_spacing(img, 0.75)
    assert fine.shape == (85, 85, 85)
    back = np.asanyarray(resample_to_reference(fine, img).dataobj)
    inner = (slice(2, -2),) * 3
    assert np.corrcoef(back[inner].ravel(), data[inner].ravel())[0, 1] > 0.97
    labels = resample_to_reference(resample_to_spacing(img, 0.75, order=0), img, order=0)
    assert labels.get_data_dtype() == img.get_data_dtype()
