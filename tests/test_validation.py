"""Input validation: one clear ImageError per problem, and precomputed masks."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from bmex_wf.image.header import header_image
from bmex_wf.image.io import (
    ImageError,
    binarize_mask,
    load_image,
    read_image,
    save_image,
    validate_mask,
)

from .helpers import shared_path

AFFINE = np.array([[0.9, 0.2, 0, -10], [-0.2, 0.9, 0, -12], [0, 0, 1.2, -8], [0, 0, 0, 1]])


def _write(path, data, affine=AFFINE):
    nib.Nifti1Image(data, affine).to_filename(path)
    return path


def _blob(shape=(12, 13, 14)):
    data = np.zeros(shape, np.int16)
    data[3:9, 4:10, 5:11] = 100
    return data


@pytest.fixture(scope="module")
def real_crop(tmp_path_factory):
    src = shared_path("data", "test_BIDS", "sub-0003", "ses-V01", "anat",
                      "sub-0003_ses-V01_T1w.nii.gz")
    img = nib.load(src)
    small = img.slicer[100:160, 100:160, 100:160]
    out = tmp_path_factory.mktemp("real") / "sub-0003_crop.nii.gz"
    header_image(np.asanyarray(small.dataobj), small.affine, img.header).to_filename(out)
    return out


def test_real_image_is_valid(real_crop):
    img = load_image(real_crop)
    assert isinstance(img, nib.Nifti1Image)
    assert img.shape == (60, 60, 60) and np.asanyarray(img.dataobj).dtype == np.uint16
    assert int(img.header["qform_code"]) == 1 and int(img.header["sform_code"]) == 1
    assert np.array_equal(img.affine, nib.load(real_crop).affine)


def test_fetal_lps_qform_only_image_is_valid():
    src = shared_path("data", "test_BIDS", "sub-0009", "ses-V01", "anat",
                      "sub-0009_ses-V01_T2w.nii.gz")
    img = load_image(src)
    assert img.shape == (135, 189, 155)
    assert int(img.header["sform_code"]) == 0 and np.array_equal(img.affine, nib.load(src).affine)


def test_single_volume_4d_is_squeezed(tmp_path):
    img = load_image(_write(tmp_path / "one.nii.gz", _blob()[..., None]))
    assert img.shape == (12, 13, 14) and img.header.get_data_shape() == (12, 13, 14)
    np.testing.assert_allclose(img.affine, AFFINE, atol=1e-6)


def _error(path) -> str:
    with pytest.raises(ImageError) as info:
        load_image(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and "\n" not in message
    assert isinstance(info.value, ValueError)
    return message


def test_several_volumes(tmp_path):
    assert "has 3 volumes" in _error(_write(tmp_path / "multi.nii.gz", np.stack([_blob()] * 3, -1)))


@pytest.mark.parametrize("shape", [(12, 13), (12, 13, 1), (12, 1, 14, 1)])
def test_two_dimensional(tmp_path, shape):
    assert "is 2-D" in _error(_write(tmp_path / "flat.nii.gz", np.ones(shape, np.int16)))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_not_finite(tmp_path, bad):
    data = _blob().astype(np.float32)
    data[5, 5, 5] = bad
    assert "1 voxel(s) are NaN or infinite" in _error(_write(tmp_path / "nan.nii.gz", data))


def test_all_nan(tmp_path):
    data = np.full((5, 6, 7), np.nan, np.float32)
    assert "NaN or infinite" in _error(_write(tmp_path / "allnan.nii", data))


def test_all_zero(tmp_path):
    assert "empty" in _error(_write(tmp_path / "zero.nii.gz", np.zeros((5, 6, 7), np.uint8)))


@pytest.mark.parametrize("zoom", [0.01, 50.0])
def test_voxel_sizes(tmp_path, zoom):
    message = _error(_write(tmp_path / "zooms.nii.gz", _blob(), np.diag([1, 1, zoom, 1])))
    assert "voxel sizes" in message and str(zoom) in message


def test_singular_affine(tmp_path):
    hdr = nib.Nifti1Image(_blob(), AFFINE).header
    hdr.set_qform(None, code=0)
    hdr.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)
    path = tmp_path / "singular.nii"
    nib.Nifti1Image(_blob(), None, hdr).to_filename(path)
    assert "affine (voxel-to-world matrix) is missing or singular" in _error(path)


def test_truncated_gzip(tmp_path, real_crop):
    blob = real_crop.read_bytes()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(blob[: len(blob) // 2])
    assert "truncated or corrupt" in _error(path)


def test_truncated_uncompressed(tmp_path):
    path = _write(tmp_path / "short.nii", _blob())
    path.write_bytes(path.read_bytes()[:1000])
    assert "truncated or corrupt" in _error(path)


@pytest.mark.parametrize("name", ["notes.nii.gz", "notes.txt", "empty.nii"])
def test_not_an_image(tmp_path, name):
    path = tmp_path / name
    if name == "empty.nii":
        path.write_bytes(b"")
    elif name.endswith(".gz"):
        path.write_bytes(gzip.compress(b"subject 1, age 23 months\n" * 40))
    else:
        path.write_text("subject 1, age 23 months\n")
    assert "not a readable NIfTI/Analyze image" in _error(path)


def test_missing_file(tmp_path):
    assert "file not found" in _error(tmp_path / "absent.nii.gz")


def test_other_formats(tmp_path):
    mgh = tmp_path / "brain.mgz"
    nib.MGHImage(_blob().astype(np.float32), np.eye(4)).to_filename(mgh)
    assert "not a NIfTI/Analyze image (MGHImage)" in _error(mgh)
    pair = tmp_path / "brain.hdr"
    nib.AnalyzeImage(_blob(), np.diag([0.8, 0.8, 0.8, 1])).to_filename(pair)
    img = load_image(pair)
    assert isinstance(img, nib.Nifti1Image) and img.shape == (12, 13, 14)
    np.testing.assert_allclose(img.affine, nib.load(pair).affine)
    np.testing.assert_allclose(img.header.get_best_affine(), img.affine)


def test_read_image_accepts_empty_data(tmp_path):
    """read_image checks only structure; load_image also checks content."""
    img = read_image(_write(tmp_path / "zero.nii.gz", np.zeros((5, 6, 7), np.uint8)))
    assert img.shape == (5, 6, 7)


# ---- masks -------------------------------------------------------------------------------

def test_binarize_mask_kinds():
    assert binarize_mask(np.array([0, 1, 1.0])).tolist() == [False, True, True]
    assert binarize_mask(np.array([0.2, 0.5, 0.9])).tolist() == [False, True, True]
    assert binarize_mask(np.array([0, 2, 41, 255], np.uint8)).tolist() == [False, True, True, True]
    with pytest.raises(ImageError, match="negative"):
        binarize_mask(np.array([0, -1, 1]))
    with pytest.raises(ImageError, match="looks like an image"):
        binarize_mask(np.array([0, 1.5, 20.25]))
    with pytest.raises(ImageError, match="looks like an image"):
        binarize_mask(np.arange(1000, dtype=np.uint16))


def test_mask_on_the_same_grid(tmp_path, real_crop):
    ref = load_image(real_crop)
    data = (np.asanyarray(ref.dataobj) > 0).astype(np.uint8)
    path = tmp_path / "mask.nii.gz"
    header_image(data, ref.affine, ref.header).to_filename(path)
    out = validate_mask(path, real_crop)
    assert out.get_data_dtype() == np.uint8 and out.shape == ref.shape
    assert np.array_equal(np.asanyarray(out.dataobj), data)


def test_mask_on_another_grid_is_resampled(tmp_path, real_crop):
    """A probabilistic mask on a coarser LPS grid lands on the right voxels."""
    ref = load_image(real_crop)
    centre = nib.affines.apply_affine(ref.affine, np.array(ref.shape) / 2 - 0.5)
    affine = np.diag([-2.0, -2.0, 2.0, 1.0])
    affine[:3, 3] = centre - affine[:3, :3] @ np.array([15.5, 15.5, 15.5])
    ijk = np.indices((32, 32, 32)).reshape(3, -1).T
    dist = np.linalg.norm(nib.affines.apply_affine(affine, ijk) - centre, axis=1)
    dist = dist.reshape(32, 32, 32)
    prob = np.clip(1.5 - dist / 10, 0, 1).astype(np.float32)  # >= 0.5 within 10 mm
    path = tmp_path / "prob.nii.gz"
    _write(path, prob, affine)
    out = validate_mask(path, ref)
    assert out.shape == ref.shape and np.allclose(out.affine, ref.affine, atol=1e-4)
    world = nib.affines.apply_affine(ref.affine, np.indices(ref.shape).reshape(3, -1).T)
    inside = (np.linalg.norm(world - centre, axis=1) < 8).reshape(ref.shape)
    outside = (np.linalg.norm(world - centre, axis=1) > 12).reshape(ref.shape)
    mask = np.asanyarray(out.dataobj).astype(bool)
    assert mask[inside].all() and not mask[outside].any()


def test_bad_masks(tmp_path, real_crop):
    empty = _write(tmp_path / "empty.nii.gz", np.zeros((5, 6, 7), np.uint8))
    with pytest.raises(ImageError, match=f"^{empty}: mask is empty"):
        validate_mask(empty, real_crop)
    far = np.diag([1.0, 1.0, 1.0, 1.0])
    far[:3, 3] = 500
    elsewhere = _write(tmp_path / "elsewhere.nii.gz", np.ones((5, 6, 7), np.uint8), far)
    with pytest.raises(ImageError, match="does not overlap"):
        validate_mask(elsewhere, real_crop)
    with pytest.raises(ImageError, match="looks like an image"):
        validate_mask(real_crop, real_crop)
    text = tmp_path / "mask.nii.gz"
    text.write_text("not an image")
    with pytest.raises(ImageError, match="not a readable"):
        validate_mask(text, real_crop)


# ---- writing -----------------------------------------------------------------------------

def test_save_image_leaves_nothing_on_failure(tmp_path):
    img = nib.Nifti1Image(_blob(), AFFINE)
    out = save_image(img, tmp_path / "ok.nii.gz")
    assert out.exists() and np.array_equal(np.asanyarray(nib.load(out).dataobj), _blob())

    class Broken(nib.Nifti1Image):
        def to_filename(self, filename, **kwargs):
            super().to_filename(filename, **kwargs)
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        save_image(Broken(_blob(), AFFINE), tmp_path / "broken.nii.gz")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.nii.gz"]


def test_header_image_round_trips_through_a_file(tmp_path):
    sheared = AFFINE.copy()
    sheared[0, 2] = 0.3  # a qform cannot hold a shear: the sform must
    for header, codes in ((None, None), (nib.Nifti1Header(), (1, 0)),
                          (nib.AnalyzeHeader(), None)):
        img = header_image(_blob().astype(bool), sheared, header, codes=codes)
        assert img.get_data_dtype() == np.uint8
        path = save_image(img, tmp_path / "img.nii.gz")
        saved = nib.load(path)
        np.testing.assert_allclose(saved.affine, sheared, atol=1e-5)
        for code in ("qform_code", "sform_code"):
            assert saved.header[code] == img.header[code]
    pair = save_image(nib.AnalyzeImage(_blob(), np.eye(4)), tmp_path / "pair.hdr")
    assert pair.exists() and (tmp_path / "pair.img").exists()
