"""Geometry interfaces in plain Nipype nodes, on real crops and synthetic volumes."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import voxel_sizes

from bmex_wf.image.header import header_image
from bmex_wf.interfaces.geometry import (
    ReorientLPS,
    ResampleToReference,
    ResampleToSpacing,
    RestoreOrientation,
    ValidateImage,
)

from .helpers import run_node, shared_path

OBLIQUE = np.array([[0.72, 0.35, 0, -20], [-0.35, 0.72, 0, -22], [0, 0, 3.0, -15], [0, 0, 0, 1]])


def _crop(tmp_path, sub, ses, suffix, slices):
    src = shared_path("data", "test_BIDS", sub, ses, "anat", f"{sub}_{ses}_{suffix}.nii.gz")
    img = nib.load(src)
    small = img.slicer[slices]
    out = tmp_path / f"{sub}_crop_{suffix}.nii.gz"
    # keep the source's form codes (nibabel's slicer would reset them)
    codes = (int(img.header["qform_code"]), int(img.header["sform_code"]))
    crop = header_image(np.asanyarray(small.dataobj), small.affine, img.header, codes=codes)
    crop.to_filename(out)
    return out


@pytest.fixture
def ras_crop(tmp_path):
    """Oblique RAS-closest real T1w, 60^3 crop."""
    return _crop(tmp_path, "sub-0002", "ses-V01", "T1w", np.s_[110:170, 110:170, 110:170])


@pytest.fixture
def lps_crop(tmp_path):
    """Fetal LPS T2w with a qform only, 50x60x50 crop."""
    return _crop(tmp_path, "sub-0009", "ses-V01", "T2w", np.s_[40:90, 60:120, 50:100])


@pytest.fixture
def synthetic(tmp_path):
    """Anisotropic (0.8x0.8x3 mm) oblique PIR-ish synthetic volume."""
    data = np.zeros((30, 32, 12), np.float32)
    data[6:24, 5:27, 3:9] = np.linspace(1, 2, 18)[:, None, None]
    affine = OBLIQUE[:, [1, 2, 0, 3]] @ np.diag([1, -1, 1, 1])
    path = tmp_path / "synthetic.nii.gz"
    header_image(data, affine, nib.Nifti1Header(), codes=(1, 1)).to_filename(path)
    return path


def _run(interface, tmp_path, name, **inputs):
    return run_node(interface, tmp_path / "work", name, **inputs), tmp_path / "work" / name


def _outputs_in(node_dir):
    return sorted(p.name for p in node_dir.glob("*.nii*"))


@pytest.mark.parametrize("fixture", ["ras_crop", "lps_crop", "synthetic"])
def test_validate_reorient_restore_chain(fixture, tmp_path, request):
    path = request.getfixturevalue(fixture)
    original = nib.load(path)
    valid, _ = _run(ValidateImage(), tmp_path, "validate", in_file=str(path))
    assert valid.out_file == str(path)  # a valid 3-D NIfTI is passed through, not copied
    assert valid.shape == list(original.shape)
    np.testing.assert_allclose(valid.zooms, voxel_sizes(original.affine), rtol=1e-6)
    assert valid.axcodes == "".join(nib.aff2axcodes(original.affine))

    lps, _ = _run(ReorientLPS(), tmp_path, "reorient", in_file=valid.out_file)
    assert lps.axcodes == valid.axcodes
    assert "".join(nib.aff2axcodes(nib.load(lps.out_file).affine)) == "LPS"
    if valid.axcodes == "LPS":
        assert lps.out_file == valid.out_file

    restored, _ = _run(RestoreOrientation(), tmp_path, "restore", in_file=lps.out_file,
                       reference_file=valid.out_file)
    back = nib.load(restored.out_file)
    assert back.shape == original.shape and np.array_equal(back.affine, original.affine)
    assert np.array_equal(np.asanyarray(back.dataobj), np.asanyarray(original.dataobj))
    for field in ("qform_code", "sform_code", "srow_x", "srow_y", "srow_z", "quatern_b",
                  "quatern_c", "quatern_d", "qoffset_x", "pixdim", "xyzt_units"):
        assert np.array_equal(back.header[field], original.header[field]), field


def test_validate_writes_a_squeezed_copy_of_a_single_volume_4d(tmp_path, synthetic):
    img = nib.load(synthetic)
    path = tmp_path / "one_volume.nii.gz"
    nib.Nifti1Image(np.asanyarray(img.dataobj)[..., None], img.affine, img.header).to_filename(path)
    out, node_dir = _run(ValidateImage(), tmp_path, "validate4d", in_file=str(path))
    assert out.out_file.startswith(str(node_dir)) and nib.load(out.out_file).shape == img.shape
    assert np.array_equal(nib.load(out.out_file).affine, img.affine)


def _bad_inputs(tmp_path):
    shape = (10, 11, 12)
    nan = np.ones(shape, np.float32)
    nan[2, 3, 4] = np.nan
    files = {
        "several_volumes": np.ones(shape + (3,), np.int16),
        "flat": np.ones((10, 11), np.int16),
        "nan": nan,
        "zero": np.zeros(shape, np.uint8),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = tmp_path / f"{name}.nii.gz"
        nib.Nifti1Image(data, np.diag([0.8, 0.8, 0.8, 1])).to_filename(paths[name])
    paths["text"] = tmp_path / "text.nii.gz"
    paths["text"].write_text("not an image\n")
    good = tmp_path / "good.nii.gz"
    nib.Nifti1Image(np.ones(shape, np.int16), np.diag([0.8, 0.8, 0.8, 1])).to_filename(good)
    paths["truncated"] = tmp_path / "truncated.nii.gz"
    paths["truncated"].write_bytes(good.read_bytes()[:60])
    return paths


MESSAGES = {"several_volumes": "has 3 volumes", "flat": "is 2-D", "nan": "NaN or infinite",
            "zero": "empty", "text": "not a readable NIfTI/Analyze image",
            "truncated": "truncated or corrupt"}


def test_bad_inputs_fail_clearly_and_leave_no_output(tmp_path):
    for name, path in _bad_inputs(tmp_path).items():
        with pytest.raises(Exception, match=f"{path}: [^\\n]*{MESSAGES[name]}"):
            _run(ValidateImage(), tmp_path, f"validate_{name}", in_file=str(path))
        assert _outputs_in(tmp_path / "work" / f"validate_{name}") == []
    # the interface itself raises the ImageError (a ValueError) when run outside a node
    from bmex_wf.image.io import ImageError

    direct = tmp_path / "direct"
    direct.mkdir()
    with pytest.raises(ImageError, match="empty"):
        ValidateImage(in_file=str(tmp_path / "zero.nii.gz")).run(cwd=str(direct))
    assert _outputs_in(direct) == []


def test_other_interfaces_reject_unreadable_files(tmp_path, synthetic):
    text = tmp_path / "text.nii.gz"
    text.write_text("not an image\n")
    cases = [(ReorientLPS(), {"in_file": str(text)}),
             (RestoreOrientation(), {"in_file": str(text), "reference_file": str(synthetic)}),
             (ResampleToSpacing(), {"in_file": str(text), "spacing": 0.8}),
             (ResampleToReference(), {"in_file": str(synthetic), "reference_file": str(text)})]
    for index, (interface, inputs) in enumerate(cases):
        with pytest.raises(Exception, match=f"{text}: not a readable"):
            _run(interface, tmp_path, f"bad{index}", **inputs)
        assert _outputs_in(tmp_path / "work" / f"bad{index}") == []


def test_restore_rejects_an_image_of_another_grid(tmp_path, synthetic, ras_crop):
    with pytest.raises(Exception, match="not on the LPS grid"):
        _run(RestoreOrientation(), tmp_path, "restore_bad", in_file=str(synthetic),
             reference_file=str(ras_crop))
    assert _outputs_in(tmp_path / "work" / "restore_bad") == []


def test_resample_to_spacing_and_back_on_a_real_crop(tmp_path, ras_crop):
    img = nib.load(ras_crop)
    down, _ = _run(ResampleToSpacing(), tmp_path, "down", in_file=str(ras_crop), spacing=0.75)
    fine = nib.load(down.out_file)
    assert fine.shape == (64, 64, 64) and fine.get_data_dtype() == np.float32
    np.testing.assert_allclose(voxel_sizes(fine.affine), 0.75, rtol=1e-5)
    np.testing.assert_allclose(fine.affine[:3, 3], img.affine[:3, 3], atol=1e-4)
    back, _ = _run(ResampleToReference(), tmp_path, "back", in_file=down.out_file,
                   reference_file=str(ras_crop))
    restored = nib.load(back.out_file)
    assert restored.shape == img.shape and np.allclose(restored.affine, img.affine, atol=1e-4)
    a = np.asanyarray(restored.dataobj)[2:-2, 2:-2, 2:-2].ravel()
    b = np.asanyarray(img.dataobj)[2:-2, 2:-2, 2:-2].ravel().astype(float)
    assert np.corrcoef(a, b)[0, 1] > 0.97


def test_resample_centered_and_nearest(tmp_path, lps_crop, synthetic):
    img = nib.load(lps_crop)
    out, _ = _run(ResampleToSpacing(), tmp_path, "strip_grid", in_file=str(lps_crop),
                  spacing=1.6, centered=True)
    coarse = nib.load(out.out_file)
    assert coarse.shape == (23, 28, 23)  # floor(size * 0.75 / 1.6)
    assert int(coarse.header["qform_code"]) == 1 and int(coarse.header["sform_code"]) == 0
    mask = tmp_path / "mask.nii.gz"
    labels = (np.asanyarray(img.dataobj) > 0).astype(np.uint8)
    header_image(labels, img.affine, img.header).to_filename(mask)
    res, _ = _run(ResampleToReference(), tmp_path, "mask_to_synthetic", in_file=str(mask),
                  reference_file=str(synthetic), order=0)
    on_ref = nib.load(res.out_file)
    assert on_ref.get_data_dtype() == np.uint8 and on_ref.shape == nib.load(synthetic).shape
    assert set(np.unique(np.asanyarray(on_ref.dataobj))) <= {0, 1}


def test_resample_synthetic_anisotropic_world_consistent(tmp_path, synthetic):
    """A linear ramp of world x survives 3 mm oblique -> 0.8 mm."""
    img = nib.load(synthetic)
    ijk = np.indices(img.shape).reshape(3, -1).T
    ramp = nib.affines.apply_affine(img.affine, ijk)[:, 0].reshape(img.shape).astype(np.float32)
    path = tmp_path / "ramp.nii.gz"
    header_image(ramp, img.affine, img.header).to_filename(path)
    out, _ = _run(ResampleToSpacing(), tmp_path, "ramp", in_file=str(path), spacing=0.8)
    fine = nib.load(out.out_file)
    world_x = nib.affines.apply_affine(
        fine.affine, np.indices(fine.shape).reshape(3, -1).T)[:, 0].reshape(fine.shape)
    src = nib.affines.apply_affine(np.linalg.inv(img.affine) @ fine.affine,
                                   np.indices(fine.shape).reshape(3, -1).T).reshape(*fine.shape, 3)
    inside = np.all((src >= 0) & (src <= np.array(img.shape) - 1), axis=-1)
    np.testing.assert_allclose(np.asanyarray(fine.dataobj)[inside], world_x[inside], atol=1e-3)
