"""Mask-fitted tile placement: complete, disjoint, cheaper than the lattice, mask-only."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bmex_wf.models import inference
from bmex_wf.models.geometry import (
    DEFAULT_GEOMETRY,
    MAX_COLUMN_LENGTH,
    TileSpec,
    default_geometry,
    parse_geometry,
)
from bmex_wf.models.inference import enhance_volume, run_enhancement
from bmex_wf.models.placement import column_cover, cube_cover, fit_grid
from bmex_wf.models.tiling import dilate_mask, fast_grid
from tests.helpers import shared_path
from tests.test_inference import LocalStub


def _blobs(shape, seed: int, count: int = 4) -> np.ndarray:
    """A union of random ellipsoids, some cut by the volume's faces."""
    rng = np.random.default_rng(seed)
    idx = np.indices(shape, dtype=np.float32)
    mask = np.zeros(shape, bool)
    for _ in range(count):
        centre = rng.uniform(0, 1, 3) * np.array(shape)
        radii = rng.uniform(3, 0.45 * min(shape), 3)
        mask |= sum(((g - c) / r) ** 2 for g, c, r in zip(idx, centre, radii)) <= 1.0
    mask[tuple(rng.integers(0, n) for n in shape)] = True  # one isolated voxel
    return mask


def _check_cover(grid, mask, dilation):
    count = grid.coverage()
    region = dilate_mask(mask, dilation)
    assert (count[region] >= 1).all(), "a voxel of the dilated mask is in no kept core"
    assert count.max() == 1, "kept cores overlap"
    assert grid.uncovered(mask) == 0
    for index in range(len(grid)):
        size = grid.size_of(index)
        assert all(n % 8 == 0 and n > 2 * grid.margin for n in size)
        assert sum(n == grid.tile for n in size) >= 2  # a tile² cross-section
        assert region[grid.keep_box(grid.starts[index], size)[0]].any(), "a tile keeps no brain"


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("spec", [TileSpec("columns", 40, 5, 2), TileSpec("cubes", 40, 5, 2),
                                  TileSpec("columns", 16, 3, 0), TileSpec("cubes", 24, 4, 1)])
def test_fit_covers_random_masks_in_kept_cores(seed, spec):
    mask = _blobs((61, 77, 50), seed)
    grid = fit_grid(mask, spec, max_length=64)
    _check_cover(grid, mask, spec.dilation)
    assert grid.placement == spec.placement
    if spec.placement == "cubes":
        assert grid.sizes is None
    else:
        assert grid.sizes.max() <= 64


def test_cube_cover_is_greedy_and_centred():
    profile = np.zeros(100, bool)
    profile[10:41] = True   # 31 voxels: two 20-long cores, slack 9 centred (4 before)
    profile[70:75] = True   # a separate short run
    assert cube_cover(profile, 20) == [6, 26, 63]
    assert cube_cover(np.zeros(5, bool), 20) == []


def test_column_cover_fits_lengths_merges_and_splits():
    profile = np.zeros(400, bool)
    profile[10:40] = True   # 30 + 2*5 = 40 -> one 40-long tile
    profile[44:50] = True   # 4 voxels apart: cheaper merged (56 < 40 + 16)
    profile[100:360] = True  # 260 voxels: split in two tiles of at most 256
    cover = column_cover(profile, 5, 256)
    assert [length for _, length in cover] == [56, 144, 144]
    cores = [(start, start + length - 10) for start, length in cover]
    assert cores[0][0] <= 10 and cores[0][1] >= 50
    assert cores[1][0] <= 100 and cores[2][1] >= 360 and cores[1][1] <= cores[2][0]


def _real_mask():
    path = shared_path("data", "test_BIDS", "sub-0002", "ses-V01", "anat", "sub-0002_ses-V01_T1w.nii.gz")
    img = nib.load(path)
    ornt = nib.orientations.ornt_transform(
        nib.io_orientation(img.affine), nib.orientations.axcodes2ornt(("L", "P", "S")))
    return np.asarray(img.as_reoriented(ornt).dataobj).transpose(2, 0, 1) > 0


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_fit_covers_real_brain_with_less_work_than_lattice(bids_dir, kind):
    mask = _real_mask()
    spec = default_geometry(kind)
    grid = fit_grid(mask, spec)
    _check_cover(grid, mask, spec.dilation)
    lattice = fast_grid(mask, spec.tile, spec.margin, spec.dilation)
    assert grid.voxels() < 0.9 * lattice.voxels()
    assert grid.summary(mask)["work_ratio"] < lattice.summary(mask)["work_ratio"]


def test_geometry_depends_only_on_mask_and_device_kind(monkeypatch):
    mask = _blobs((64, 70, 58), 11)
    rng = np.random.default_rng(1)
    grids = []
    real_grid = inference.enhance_grid

    def spy(*args, **kwargs):
        grids.append(real_grid(*args, **kwargs)[0])
        return grids[-1], 0.0

    monkeypatch.setattr(inference, "enhance_grid", spy)
    seen = set()
    for native_bf16 in (False, True):
        monkeypatch.setattr("bmex_wf.models.precision.cpu_has_native_bf16", lambda v=native_bf16: v)
        for width, threads in ((8, 1), (64, 2)):
            stub = LocalStub()
            stub.width = width
            vol = np.where(mask, rng.uniform(1, 900, mask.shape), 0).astype(np.float32)
            report = run_enhancement(vol, stub, mask=mask, device="cpu", num_threads=threads,
                                     progress=False).report
            seen.add((report["geometry"], report["tiles"], report["voxels_computed"],
                      grids[-1].starts.tobytes(), grids[-1].sizes.tobytes()))
    assert len(seen) == 1
    grid = fit_grid(mask, DEFAULT_GEOMETRY["cpu"])
    assert seen.pop()[1] == len(grid)
    gpu = fit_grid(mask, default_geometry("cuda"))
    assert default_geometry("cuda") == DEFAULT_GEOMETRY["gpu"] != DEFAULT_GEOMETRY["cpu"]
    assert (gpu.tile, gpu.placement) != (grid.tile, grid.placement)


@pytest.mark.parametrize("geometry", ["columns-40-m5-d2", "cubes-40-m5-d2", "cubes-32-m3-d0"])
def test_fit_stitching_equals_lattice_for_local_network(geometry):
    idx = np.indices((70, 84, 62), dtype=np.float32)
    mask = _blobs((70, 84, 62), 5)
    vol = np.where(mask, 100 + 3 * idx[0] + 2 * idx[1] + idx[2], 0).astype(np.float32)
    spec = parse_geometry(geometry)
    fitted = enhance_volume(vol, LocalStub(), mask=mask, geometry=spec, device="cpu", progress=False)
    lattice = enhance_volume(vol, LocalStub(), mask=mask, geometry=TileSpec("lattice", spec.tile,
                             spec.margin, spec.dilation), device="cpu", progress=False)
    region = dilate_mask(mask, spec.dilation)
    for a, b in zip(fitted, lattice):
        np.testing.assert_array_equal(a[..., region], b[..., region])
    np.testing.assert_array_equal(fitted[0][region], vol[region])


def test_geometry_names_round_trip_and_reject_bad_values():
    for spec in DEFAULT_GEOMETRY.values():
        assert parse_geometry(spec.name) == spec
    assert parse_geometry("lattice-40-m5-d2") == TileSpec("lattice", 40, 5, 2)
    for bad in ("columns-40-5-2", "spiral-40-m5-d2"):
        with pytest.raises(ValueError, match="geometry|placement"):
            parse_geometry(bad)
    with pytest.raises(ValueError, match="tile"):
        fit_grid(np.ones((9, 9, 9), bool), TileSpec("columns", 36, 5))
    with pytest.raises(ValueError, match="device kind"):
        default_geometry("tpu")
    assert MAX_COLUMN_LENGTH % 8 == 0


def test_enhance_rejects_unknown_geometry():
    vol = np.ones((20, 20, 20), np.float32)
    with pytest.raises(ValueError, match="geometry"):
        enhance_volume(vol, LocalStub(), geometry="giant", device="cpu", progress=False)
