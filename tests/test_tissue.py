"""Tissue volumes, 3-class Atropos and the TissueVolumes interface."""

from __future__ import annotations

import csv
import tempfile

import nibabel as nib
import numpy as np
import pytest

from bmex_wf.postproc.volumes import (
    METHODS,
    TISSUES,
    VOLUME_COLUMNS,
    TissueError,
    atropos_dseg,
    order_classes,
    read_volumes_table,
    tissue_volumes,
    volumes_table,
)

from .helpers import rotation

#: Class means of the synthetic T1w-like phantom (background, CSF, GM, WM).
T1_MEANS = np.array([0.0, 250.0, 550.0, 850.0])


def nested_cubes(shape=(36, 36, 36)) -> np.ndarray:
    """Labels: a CSF shell around a GM shell around a WM core (no voxel left unlabelled)."""
    labels = np.zeros(shape, np.uint8)
    for label, margin in ((1, 3), (2, 7), (3, 12)):
        labels[tuple(slice(margin, n - margin) for n in shape)] = label
    return labels


def phantom(labels: np.ndarray, affine: np.ndarray, contrast: str = "T1w", noise: float = 40.0,
            seed: int = 0) -> tuple[nib.Nifti1Image, nib.Nifti1Image]:
    """(image, mask) with class means of :data:`T1_MEANS` (T2w: reversed) plus Gaussian noise."""
    means = T1_MEANS if contrast == "T1w" else np.r_[0.0, T1_MEANS[:0:-1]]
    data = means[labels] + np.random.default_rng(seed).normal(0, noise, labels.shape)
    data = np.where(labels > 0, np.clip(data, 1, None), 0).astype(np.float32)
    return (nib.Nifti1Image(data, affine),
            nib.Nifti1Image((labels > 0).astype(np.uint8), affine))


def saved(img: nib.Nifti1Image, path) -> nib.Nifti1Image:
    nib.save(img, path)
    return nib.load(str(path))


# ------------------------------------------------------------------- tissue_volumes
def test_volumes_are_counts_times_voxel_volume():
    labels = np.zeros((10, 12, 14), np.int16)
    labels[:2] = 1        # 2*12*14 = 336 CSF voxels
    labels[2:5] = 2       # 504 GM
    labels[5:6, :6] = 3   # 84 WM
    voxel_mm3 = 0.8 * 1.2 * 2.5
    vols = tissue_volumes(nib.Nifti1Image(labels, np.diag([0.8, 1.2, 2.5, 1.0])))
    assert set(vols) == {*TISSUES, "brain"}
    assert vols["CSF"] == pytest.approx(336 * voxel_mm3 / 1000)
    assert vols["GM"] == pytest.approx(504 * voxel_mm3 / 1000)
    assert vols["WM"] == pytest.approx(84 * voxel_mm3 / 1000)
    assert vols["brain"] == pytest.approx((336 + 504 + 84) * voxel_mm3 / 1000)


def test_volumes_do_not_depend_on_orientation_or_dtype():
    labels = nested_cubes((20, 20, 20))
    zooms = np.diag([0.9, 0.9, 1.5, 1.0])
    plain = tissue_volumes(nib.Nifti1Image(labels, zooms))
    oblique = tissue_volumes(nib.Nifti1Image(labels.astype(np.float32), rotation(26, 2) @ zooms))
    flipped = tissue_volumes(nib.Nifti1Image(labels[::-1].astype(np.uint16),
                                             np.diag([-0.9, 0.9, 1.5, 1.0])))
    for key in plain:
        assert oblique[key] == pytest.approx(plain[key])
        assert flipped[key] == pytest.approx(plain[key])


def test_empty_label_map_has_zero_volumes():
    vols = tissue_volumes(nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)))
    assert vols == {"CSF": 0.0, "GM": 0.0, "WM": 0.0, "brain": 0.0}


@pytest.mark.parametrize("data, problem", [
    (np.full((4, 4, 4), 5, np.uint8), "outside 0"),
    (np.full((4, 4, 4), -1, np.int16), "outside 0"),
    (np.full((4, 4, 4), 1.5, np.float32), "non-integer"),
    (np.ones((4, 4, 4, 2), np.uint8), "3-D"),
])
def test_bad_label_maps_name_the_file(tmp_path, data, problem):
    path = tmp_path / "bad_dseg.nii.gz"
    dseg = saved(nib.Nifti1Image(data, np.eye(4)), path)
    with pytest.raises(TissueError, match=problem) as info:
        tissue_volumes(dseg)
    message = str(info.value)
    assert str(path) in message and "\n" not in message


# --------------------------------------------------------------------- atropos_dseg
def test_order_classes_by_mean_and_contrast():
    labels = np.array([1, 2, 3, 0, 1])
    values = np.array([900.0, 100.0, 500.0, 0.0, 900.0])  # class 2 darkest, class 1 brightest
    np.testing.assert_array_equal(order_classes(labels, values, "T1w"), [3, 1, 2, 0, 3])
    np.testing.assert_array_equal(order_classes(labels, values, "T2w"), [1, 3, 2, 0, 1])
    # First months: grey and white matter swap (T1w: CSF < WM < GM; T2w: GM < WM < CSF).
    np.testing.assert_array_equal(order_classes(labels, values, "T1w", "Month0"), [2, 1, 3, 0, 2])
    np.testing.assert_array_equal(order_classes(labels, values, "T2w", "Fetal"), [1, 2, 3, 0, 1])
    np.testing.assert_array_equal(order_classes(labels, values, "T2w", "Month24"),
                                  order_classes(labels, values, "T2w"))
    with pytest.raises(TissueError, match="contrast"):
        order_classes(labels, values, "FLAIR")


@pytest.mark.parametrize("contrast", ["T1w", "T2w"])
def test_atropos_recovers_a_phantom(contrast, tmp_path, monkeypatch):
    labels = nested_cubes()
    affine = rotation(20, 0) @ np.diag([0.8, 0.8, 1.0, 1.0])
    image, mask = phantom(labels, affine, contrast)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    seg = atropos_dseg(image, mask, contrast=contrast, iterations=3)
    assert list(tmp_path.iterdir()) == []  # Atropos' probability images are not left behind
    assert tempfile.tempdir == str(tmp_path)
    out = np.asanyarray(seg.dataobj)
    assert seg.shape == labels.shape and out.dtype == np.uint8
    np.testing.assert_allclose(seg.affine, affine)
    assert np.mean(out == labels) > 0.98
    truth = tissue_volumes(nib.Nifti1Image(labels, affine))
    found = tissue_volumes(seg)
    for tissue in TISSUES:
        assert found[tissue] == pytest.approx(truth[tissue], rel=0.05)
    assert found["brain"] == pytest.approx(truth["brain"])  # every masked voxel is classified


def test_contrast_decides_the_label_order():
    """A T2w image named as T1w swaps CSF and WM; named as T2w it is right."""
    labels = nested_cubes((28, 28, 28))
    image, mask = phantom(labels, np.eye(4), "T2w", seed=1)
    as_t1 = np.asanyarray(atropos_dseg(image, mask, contrast="T1w", iterations=2).dataobj)
    as_t2 = np.asanyarray(atropos_dseg(image, mask, contrast="T2w", iterations=2).dataobj)
    assert np.mean(as_t2 == labels) > 0.98
    swapped = np.array([0, 3, 2, 1], np.uint8)[labels]
    assert np.mean(as_t1 == swapped) > 0.98


def test_atropos_input_errors_name_the_file(tmp_path):
    labels = nested_cubes((20, 20, 20))
    image, mask = phantom(labels, np.eye(4))
    image = saved(image, tmp_path / "brain.nii.gz")
    small = saved(nib.Nifti1Image(np.ones((10, 20, 20), np.uint8), np.eye(4)),
                  tmp_path / "small_mask.nii.gz")
    with pytest.raises(TissueError, match="small_mask.nii.gz.*differs"):
        atropos_dseg(image, small)
    shifted = saved(nib.Nifti1Image(np.asanyarray(mask.dataobj), np.diag([2, 2, 2, 1.0])),
                    tmp_path / "other_grid_mask.nii.gz")
    with pytest.raises(TissueError, match="other_grid_mask.nii.gz.*affine"):
        atropos_dseg(image, shifted)
    empty = saved(nib.Nifti1Image(np.zeros((20, 20, 20), np.uint8), np.eye(4)),
                  tmp_path / "empty_mask.nii.gz")
    with pytest.raises(TissueError, match="empty_mask.nii.gz.*0 voxels"):
        atropos_dseg(image, empty)
    flat = saved(nib.Nifti1Image(np.full((20, 20, 20), 7.0, np.float32), np.eye(4)),
                 tmp_path / "flat.nii.gz")
    with pytest.raises(TissueError, match="flat.nii.gz.*constant"):
        atropos_dseg(flat, mask)
    with pytest.raises(TissueError, match="brain.nii.gz.*contrast 'PD'"):
        atropos_dseg(image, mask, contrast="PD")


def _real_crop(path, side: int = 56):
    """A central cube of a skull-stripped shared image, with its non-zero mask."""
    img = nib.load(str(path))
    data = np.asanyarray(img.dataobj)
    centre = np.round(np.argwhere(data > 0).mean(axis=0)).astype(int)
    box = tuple(slice(c - side // 2, c + side // 2) for c in centre)
    crop = img.slicer[box]
    brain = nib.Nifti1Image(np.asanyarray(crop.dataobj).astype(np.float32), crop.affine)
    mask = nib.Nifti1Image((np.asanyarray(crop.dataobj) > 0).astype(np.uint8), crop.affine)
    return brain, mask


@pytest.mark.parametrize("subject, contrast, age_group, darkest_first", [
    ("0002", "T1w", "Month24", (1, 2, 3)),  # CSF < GM < WM
    ("0009", "T2w", "Fetal", (2, 3, 1)),    # fetal T2w: GM < WM (unmyelinated) < CSF
])
def test_atropos_on_real_images(bids_dir, subject, contrast, age_group, darkest_first):
    path = next((bids_dir / f"sub-{subject}").glob(f"ses-*/anat/*_{contrast}.nii.gz"), None)
    if path is None:
        pytest.skip(f"no {contrast} image of sub-{subject} in {bids_dir}")
    brain, mask = _real_crop(path)
    seg = atropos_dseg(brain, mask, contrast=contrast, iterations=3, age_group=age_group)
    labels, data = np.asanyarray(seg.dataobj), np.asanyarray(brain.dataobj)
    inside = np.asanyarray(mask.dataobj) > 0
    assert np.array_equal(labels > 0, inside)
    means = [data[labels == k].mean() for k in (1, 2, 3)]
    assert tuple(np.argsort(means) + 1) == darkest_first
    vols = tissue_volumes(seg)
    voxel_ml = abs(np.linalg.det(brain.affine[:3, :3])) / 1000
    assert vols["brain"] == pytest.approx(inside.sum() * voxel_ml)
    assert all(vols[t] > 0.05 * vols["brain"] for t in TISSUES)


# --------------------------------------------------------------------------- tables
def test_volumes_table_round_trip(tmp_path):
    rows = {
        "atropos_enhanced": {"CSF": 100.0, "GM": 600.25, "WM": 400.0, "brain": 1100.25},
        "bmex": {"CSF": 110.0, "GM": 590.0, "WM": 410.5, "brain": 1110.5},
        "atropos_original": {"CSF": float("nan"), "GM": None, "WM": 1.0, "brain": 1.0},
    }
    text = volumes_table(rows)
    lines = text.splitlines()
    assert lines[0].split("\t") == list(VOLUME_COLUMNS)
    assert [line.split("\t")[0] for line in lines[1:]] == list(METHODS)
    assert lines[2].split("\t")[1:3] == ["n/a", "n/a"]
    path = tmp_path / "sub-01_desc-volumes_morph.tsv"
    path.write_text(text)
    back = read_volumes_table(path)
    assert back["bmex"] == rows["bmex"]
    assert back["atropos_enhanced"]["GM"] == pytest.approx(600.25)
    assert back["atropos_original"]["CSF"] is None


def test_read_volumes_table_errors(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_text("name\tGM_mL\nbmex\t1\n")
    with pytest.raises(TissueError, match="bad.tsv.*method"):
        read_volumes_table(bad)
    bad.write_text("method\tCSF_mL\tGM_mL\tWM_mL\tbrain_mL\nbmex\t1\tlots\t2\t3\n")
    with pytest.raises(TissueError, match="bad.tsv: GM_mL of 'bmex'"):
        read_volumes_table(bad)


# ------------------------------------------------------------------------ interface
def test_interface_writes_one_row_per_method(tmp_path, monkeypatch):
    from bmex_wf.image.io import ImageError
    from bmex_wf.interfaces.tissue import TissueVolumes

    labels = nested_cubes((32, 32, 32))
    affine = np.diag([1.0, 1.0, 1.2, 1.0])
    image, mask = phantom(labels, affine, noise=20.0)
    files = {}
    for name, img in (("dseg", nib.Nifti1Image(labels, affine)), ("brain", image),
                      ("mask", mask)):
        files[name] = tmp_path / f"sub-01_{name}.nii.gz"
        nib.save(img, files[name])
    # The "enhanced" brain: reversed intensities, so the T1w Atropos classes come out swapped.
    nib.save(nib.Nifti1Image(np.where(labels > 0, 1100 - image.get_fdata(), 0), affine),
             tmp_path / "enhanced.nii.gz")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    result = TissueVolumes(dseg=str(files["dseg"]), original_brain=str(files["brain"]),
                           enhanced_brain=str(tmp_path / "enhanced.nii.gz"),
                           brain_mask=str(files["mask"]), contrast="T1w",
                           atropos_iterations=2).run()
    out = result.outputs.out_tsv
    assert out.startswith(str(work)) and out.endswith(".tsv")
    with open(out, newline="") as handle:
        rows = {row["method"]: row for row in csv.DictReader(handle, delimiter="\t")}
    assert list(rows) == list(METHODS)
    truth = tissue_volumes(nib.Nifti1Image(labels, affine))
    for tissue in TISSUES:
        assert float(rows["bmex"][f"{tissue}_mL"]) == pytest.approx(truth[tissue], abs=1e-3)
        assert float(rows["atropos_original"][f"{tissue}_mL"]) == pytest.approx(
            truth[tissue], rel=0.05)
    assert float(rows["atropos_enhanced"]["CSF_mL"]) == pytest.approx(truth["WM"], rel=0.05)

    # Month0 T1w: grey and white matter swap in the class order.
    early = TissueVolumes(dseg=str(files["dseg"]), original_brain=str(files["brain"]),
                          enhanced_brain=str(files["brain"]), brain_mask=str(files["mask"]),
                          contrast="T1w", age_group="Month0", atropos_iterations=2).run()
    early_rows = read_volumes_table(early.outputs.out_tsv)
    assert early_rows["atropos_original"]["GM"] == pytest.approx(truth["WM"], rel=0.05)
    assert early_rows["atropos_original"]["WM"] == pytest.approx(truth["GM"], rel=0.05)
    assert early_rows["bmex"]["GM"] == pytest.approx(truth["GM"], abs=1e-3)

    only = TissueVolumes(dseg=str(files["dseg"]), contrast="T1w", run_atropos=False).run()
    assert list(read_volumes_table(only.outputs.out_tsv)) == ["bmex"]
    with pytest.raises(ImageError, match="sub-01_dseg.nii.gz.*need original_brain"):
        TissueVolumes(dseg=str(files["dseg"]), contrast="T1w").run()
