"""Exact LPS reorientation, its inverse, and the network's axis order."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from bmex_wf.image.header import header_image
from bmex_wf.image.io import load_image
from bmex_wf.image.orientation import (
    axcodes,
    from_network_order,
    reorient_to_lps,
    restore_axis_order,
    restore_orientation,
    to_network_order,
)

from .helpers import rotation as _rotation
from .helpers import shared_path


def _head(oblique: bool = False) -> nib.Nifti1Image:
    """A small RAS image whose voxels hold unique values, zooms 1x1.2x3 mm."""
    data = np.arange(7 * 8 * 9, dtype=np.int32).reshape(7, 8, 9)
    affine = np.diag([1.0, 1.2, 3.0, 1.0])
    affine[:3, 3] = (-3.1, 20.5, -11.0)
    if oblique:
        affine = _rotation(26, 2) @ _rotation(-12, 0) @ affine
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm", "sec")
    return img


def _as(img: nib.Nifti1Image, codes: str) -> nib.Nifti1Image:
    """The same head (same world geometry) stored with voxel axes ``codes``."""
    out = img.as_reoriented(ornt_transform(io_orientation(img.affine), axcodes2ornt(tuple(codes))))
    out.header.set_qform(out.affine, code=1)
    out.header.set_sform(out.affine, code=1)
    return out


CASES = [("RAS", False), ("LPS", False), ("LAS", False), ("PIR", False), ("RAS", True),
         ("PIR", True), ("SLA", True)]


def _world_of_values(img) -> dict:
    data = np.asanyarray(img.dataobj)
    ijk = np.indices(data.shape).reshape(3, -1).T
    world = nib.affines.apply_affine(img.affine, ijk)
    order = np.argsort(data.ravel())
    return world[order]


@pytest.mark.parametrize(("codes", "oblique"), CASES)
def test_reorient_keeps_every_voxel_in_place(codes, oblique, tmp_path):
    img = _as(_head(oblique), codes)
    assert axcodes(img) == codes
    lps = reorient_to_lps(img)
    assert axcodes(lps) == "LPS"
    np.testing.assert_allclose(_world_of_values(lps), _world_of_values(img), atol=1e-4)
    # the direction (obliquity) is kept: columns are signed permutations of the input's
    cols_in = img.affine[:3, :3] / np.linalg.norm(img.affine[:3, :3], axis=0)
    cols_out = lps.affine[:3, :3] / np.linalg.norm(lps.affine[:3, :3], axis=0)
    assert np.allclose(np.abs(cols_in.T @ cols_out).max(axis=0), 1)
    # the forms follow the voxels and keep their codes
    assert int(lps.header["qform_code"]) == 1 and int(lps.header["sform_code"]) == 1
    np.testing.assert_allclose(lps.header.get_sform(), lps.affine, atol=1e-4)
    np.testing.assert_allclose(lps.header.get_qform(), lps.affine, atol=1e-4)
    lps.to_filename(tmp_path / "lps.nii")
    saved = nib.load(tmp_path / "lps.nii").header
    assert (int(saved["qform_code"]), int(saved["sform_code"])) == (1, 1)


@pytest.mark.parametrize(("codes", "oblique"), CASES)
def test_round_trip_is_exact(codes, oblique, tmp_path):
    path = tmp_path / "in.nii.gz"
    _as(_head(oblique), codes).to_filename(path)
    original = load_image(path)
    lps = reorient_to_lps(original)
    lps.to_filename(tmp_path / "lps.nii.gz")  # the frame survives a trip through a file
    back = restore_orientation(nib.load(tmp_path / "lps.nii.gz"), original)
    back.to_filename(tmp_path / "back.nii.gz")
    back = nib.load(tmp_path / "back.nii.gz")
    assert back.shape == original.shape
    assert np.array_equal(np.asanyarray(back.dataobj), np.asanyarray(original.dataobj))
    assert np.array_equal(back.affine, original.affine)
    for field in ("qform_code", "sform_code", "pixdim", "xyzt_units", "quatern_b", "quatern_c",
                  "quatern_d", "srow_x", "srow_y", "srow_z"):
        assert np.array_equal(back.header[field], original.header[field]), field


def test_restore_sets_the_data_type_and_keeps_header_fields(tmp_path):
    head = _as(_head(True), "PIR")
    header_image(head.dataobj, head.affine, head.header, codes=(1, 0)).to_filename(
        tmp_path / "qform_only.nii")
    original = load_image(tmp_path / "qform_only.nii")
    lps = reorient_to_lps(original)
    probs = np.asanyarray(lps.dataobj) / 504.0
    restored = restore_orientation(nib.Nifti1Image(probs, lps.affine), original)
    assert restored.get_data_dtype() == np.float32
    assert int(restored.header["sform_code"]) == 0 and int(restored.header["qform_code"]) == 1
    assert restored.header.get_xyzt_units() == ("mm", "sec")
    np.testing.assert_allclose(np.asanyarray(restored.dataobj),
                               np.asanyarray(original.dataobj) / 504.0)
    binary = nib.Nifti1Image((probs > 0.5).astype(np.uint8), lps.affine)
    mask = restore_orientation(binary, original)
    assert mask.get_data_dtype() == np.uint8
    as_u8 = restore_orientation(lps, original, dtype=np.uint16)
    assert as_u8.get_data_dtype() == np.uint16


def test_restore_rejects_an_image_off_the_lps_grid():
    original = _as(_head(), "RAS")
    lps = reorient_to_lps(original)
    with pytest.raises(ValueError, match="not on the LPS grid"):
        restore_orientation(original, original)  # RAS array, not LPS
    shifted = nib.Nifti1Image(np.asanyarray(lps.dataobj), lps.affine @ np.diag([1, 1, 2, 1]))
    with pytest.raises(ValueError, match="not on the LPS grid"):
        restore_orientation(shifted, original)


@pytest.mark.parametrize(("codes", "oblique"), [("RAS", False), ("LPS", False), ("PIR", True)])
def test_network_grid_gets_the_input_axis_order_exactly(codes, oblique):
    from nibabel.affines import voxel_sizes

    from bmex_wf.image.resample import resample_to_spacing

    original = _as(_head(oblique), codes)  # 1 x 1.2 x 3 mm voxels
    grid = resample_to_spacing(reorient_to_lps(original), 0.8)
    out = restore_axis_order(grid, original)
    assert axcodes(out) == codes and sorted(out.shape) == sorted(grid.shape)
    unit = [a[:3, :3] / np.linalg.norm(a[:3, :3], axis=0) for a in (out.affine, original.affine)]
    np.testing.assert_allclose(unit[0], unit[1], atol=1e-6)  # the input's direction cosines
    np.testing.assert_allclose(voxel_sizes(out.affine), 0.8, atol=1e-5)
    # no interpolation: every voxel lands exactly on a voxel of the grid, with its value
    ijk = np.indices(out.shape).reshape(3, -1).T
    on_grid = nib.affines.apply_affine(np.linalg.inv(grid.affine) @ out.affine, ijk)
    np.testing.assert_allclose(on_grid, np.rint(on_grid), atol=1e-4)
    values = np.asanyarray(grid.dataobj)[tuple(np.rint(on_grid).astype(int).T)]
    assert np.array_equal(np.asanyarray(out.dataobj).ravel(), values)
    assert int(out.header["qform_code"]) == int(original.header["qform_code"])


def test_axis_order_restore_rejects_other_directions():
    original = _as(_head(), "RAS")
    with pytest.raises(ValueError, match="directions"):
        restore_axis_order(original, original)  # RAS axes, not the LPS frame


def test_same_head_gives_the_same_network_array():
    base = _head(oblique=True)
    arrays = [to_network_order(np.asanyarray(reorient_to_lps(_as(base, c)).dataobj))
              for c in ("RAS", "LPS", "LAS", "PIR", "IRP", "SAL")]
    for arr in arrays[1:]:
        assert np.array_equal(arr, arrays[0])
    # and it is not the same as a naive read of the RAS array
    assert not np.array_equal(arrays[0], np.asanyarray(base.dataobj).transpose(2, 0, 1))


def test_network_order_round_trip_and_channels():
    data = np.random.default_rng(0).random((4, 5, 6))
    net = to_network_order(data)
    assert net.shape == (6, 4, 5) and net.flags.c_contiguous
    assert np.array_equal(from_network_order(net), data)
    scores = np.stack([data, 2 * data])
    assert to_network_order(scores).shape == (2, 6, 4, 5)
    assert np.array_equal(from_network_order(to_network_order(scores)), scores)
    with pytest.raises(ValueError):
        to_network_order(np.zeros((3, 3)))


def _release_network_array(path) -> np.ndarray:
    """The release's recipe: SimpleITK array, flip y and x, swap axes 1 and 2."""
    import SimpleITK as sitk

    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    return np.swapaxes(arr[:, ::-1, ::-1], 1, 2)


def _crop(path, out, step=3):
    img = nib.load(path)
    small = img.slicer[40:260:step, 30:270:step, 50:250:step]
    nib.Nifti1Image(np.asanyarray(small.dataobj), small.affine, small.header).to_filename(out)
    return out


def test_ras_input_matches_the_release_recipe(tmp_path):
    """Real oblique RAS-closest image: our network array equals the release's."""
    import SimpleITK as sitk

    src = shared_path("data", "test_BIDS", "sub-0002", "ses-V01", "anat",
                      "sub-0002_ses-V01_T1w.nii.gz")
    path = _crop(src, tmp_path / "sub-0002_crop.nii.gz")
    img = load_image(path)
    rotation = img.affine[:3, :3]
    assert axcodes(img) == "RAS" and not np.allclose(rotation, np.diag(np.diag(rotation)))
    ours = to_network_order(np.asanyarray(reorient_to_lps(img).dataobj))
    assert np.array_equal(ours, _release_network_array(path))
    # SimpleITK's own reorientation to the closest LPS axes agrees as well
    lps_itk = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    assert np.array_equal(ours, np.swapaxes(sitk.GetArrayFromImage(lps_itk), 1, 2))


def test_lps_input_gets_the_network_array_of_its_ras_copy(tmp_path):
    """sub-0009 (LPS, qform only): same network array as the release gives its RAS copy."""
    src = shared_path("data", "test_BIDS", "sub-0009", "ses-V01", "anat",
                      "sub-0009_ses-V01_T2w.nii.gz")
    original = load_image(src)
    assert axcodes(original) == "LPS" and int(original.header["sform_code"]) == 0
    ras = original.as_reoriented(ornt_transform(io_orientation(original.affine),
                                                axcodes2ornt(("R", "A", "S"))))
    ras.to_filename(tmp_path / "ras.nii.gz")
    ours = to_network_order(np.asanyarray(reorient_to_lps(original).dataobj))
    assert np.array_equal(ours, _release_network_array(tmp_path / "ras.nii.gz"))
    # the release's recipe applied to the LPS file itself gives a mirrored array (its fault)
    assert not np.array_equal(ours, _release_network_array(src))
    # and the round trip keeps the qform-only header
    back = restore_orientation(reorient_to_lps(original), original)
    assert np.array_equal(np.asanyarray(back.dataobj), np.asanyarray(original.dataobj))
    assert np.array_equal(back.affine, original.affine)
    assert int(back.header["sform_code"]) == 0 and int(back.header["qform_code"]) == 1
