"""Tile geometry: release patch grid, fast grid, sliding windows."""

from __future__ import annotations

import math

import nibabel as nib
import numpy as np
import pytest

from bmex_wf.models.tiling import (
    TileGrid,
    dilate_mask,
    extract_tile,
    fast_grid,
    sliding_window_grid,
    upstream_grid,
)
from tests.helpers import shared_path


def _ellipsoid(shape, centre, radii) -> np.ndarray:
    grid = np.indices(shape, dtype=np.float32)
    dist = sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii))
    return dist <= 1.0


def test_upstream_grid_full_cube():
    # padded n = 128; first = 40, last = 87 -> clamped to 128 - 45 = 83; range(35, 88, 18).
    grid = upstream_grid(np.ones((48, 48, 48), np.float32))
    assert grid.tile == 40 and grid.margin == 5
    assert sorted(set(grid.starts[:, 0])) == [35 - 40, 53 - 40, 71 - 40]
    assert len(grid) == 27


def test_upstream_grid_interior_box():
    # brain on indices 10..29 of a 100-long axis: padded first = 50, last = 69 (no clamp),
    # range(45, 74, 18) = 45, 63 in padded coordinates.
    vol = np.zeros((100, 60, 60), np.float32)
    vol[10:30, 20:40, 5:55] = 7.0
    grid = upstream_grid(vol)
    assert sorted(set(grid.starts[:, 0])) == [5, 23]
    assert sorted(set(grid.starts[:, 1])) == [15, 33]
    assert len(grid) == 2 * 2 * len(range(45 - 5, 94 + 5, 18))


def test_upstream_grid_shift_starts_earlier():
    vol = np.zeros((100, 60, 60), np.float32)
    vol[10:30, 20:40, 5:55] = 1.0
    assert sorted(set(upstream_grid(vol, shift=9).starts[:, 0])) == [-4, 14, 32]
    with pytest.raises(ValueError, match="shift"):
        upstream_grid(vol, shift=18)


def test_upstream_grid_ignores_non_positive_slices():
    vol = np.zeros((60, 60, 60), np.float32)
    vol[20:30, 20:30, 20:30] = 5.0
    vol[0, :, :] = -1.0  # negative slice sums do not count
    assert upstream_grid(vol).starts[:, 0].min() == 20 - 5


@pytest.mark.parametrize(("tile", "margin"), [(40, 0), (40, 5), (32, 4), (48, 4)])
def test_fast_grid_covers_dilated_mask_exactly_once(tile, margin):
    mask = _ellipsoid((90, 110, 80), (45, 50, 41), (30, 44, 27))
    grid = fast_grid(mask, tile, margin, dilation=2)
    assert grid.tile % 8 == 0 and grid.tile == tile
    count = grid.coverage()
    region = dilate_mask(mask, 2)
    assert (count[region] == 1).all()
    assert count.max() == 1
    # every listed tile keeps at least one voxel of the dilated mask
    for start in grid.starts:
        assert region[grid.keep_box(start)[0]].any()


def test_fast_grid_skips_empty_corners():
    mask = _ellipsoid((120, 120, 120), (60, 60, 60), (55, 55, 55))
    grid = fast_grid(mask, 16, 0, dilation=0)
    box_tiles = math.ceil(111 / 16) ** 3
    assert len(grid) < box_tiles  # the far corners of the box are skipped
    assert (grid.coverage()[mask] == 1).all()


def test_fast_grid_small_mask_single_tile():
    mask = np.zeros((12, 20, 9), bool)
    mask[3:8, 5:15, 2:7] = True
    grid = fast_grid(mask)
    assert len(grid) == 1
    assert (grid.coverage()[mask] == 1).all()


@pytest.mark.parametrize(("tile", "margin"), [(36, 0), (0, 0), (40, 20), (40, -1)])
def test_fast_grid_rejects_invalid_tiles(tile, margin):
    with pytest.raises(ValueError, match="tile"):
        fast_grid(np.ones((10, 10, 10), bool), tile, margin)


def test_extract_tile_zero_fills_outside():
    vol = np.arange(5 * 6 * 7, dtype=np.float32).reshape(5, 6, 7)
    tile = extract_tile(vol, (-2, 3, 4), 8)
    assert tile.shape == (8, 8, 8)
    np.testing.assert_array_equal(tile[2:7, 0:3, 0:3], vol[0:5, 3:6, 4:7])
    assert tile[:2].sum() == 0 and tile[7:].sum() == 0
    assert extract_tile(vol, (10, 0, 0), 8).sum() == 0


def test_sliding_window_grid_release_rule():
    grid = sliding_window_grid((150, 64, 40))
    # step int(64 * 0.15) = 9; first d with 9d + 64 >= 150 is 10 -> 11 starts, last clamped.
    assert sorted(set(grid.starts[:, 0])) == [0, 9, 18, 27, 36, 45, 54, 63, 72, 81, 86]
    assert set(grid.starts[:, 1]) == {0}
    assert set(grid.starts[:, 2]) == {-12}  # 24 zero voxels: 12 before, 12 after
    assert len(grid) == 11
    assert (grid.coverage() >= 1).all()


def test_tilegrid_keep_box_clips():
    grid = TileGrid((10, 10, 10), 8, 1, np.array([[-3, 5, 0]]))
    vol, loc = grid.keep_box(grid.starts[0])
    assert vol == (slice(0, 4), slice(6, 10), slice(1, 7))
    assert loc == (slice(3, 7), slice(1, 5), slice(1, 7))


def _network_order_brain(path) -> np.ndarray:
    img = nib.load(path)
    ornt = nib.orientations.ornt_transform(
        nib.io_orientation(img.affine), nib.orientations.axcodes2ornt(("L", "P", "S")))
    return np.asarray(img.as_reoriented(ornt).dataobj, dtype=np.float32).transpose(2, 0, 1)


def test_upstream_patch_count_24_month_geometry(bids_dir):
    path = shared_path("data", "test_BIDS", "sub-0002", "ses-V01", "anat", "sub-0002_ses-V01_T1w.nii.gz")
    vol = _network_order_brain(path)
    grid = upstream_grid(vol)
    expected = 1
    for axis in range(3):
        nonzero = np.flatnonzero(np.any(vol > 0, axis=tuple(a for a in range(3) if a != axis)))
        n = vol.shape[axis] + 80
        first, last = nonzero[0] + 40, nonzero[-1] + 40
        first = 46 if first - 22.5 <= 0 else first
        last = n - 45 if last + 45 >= n else last
        expected *= math.ceil((last + 5 - (first - 5)) / 18)
    assert len(grid) == expected
    assert 800 <= len(grid) <= 1300  # "about 1,000 patches" for a 0.8 mm brain
    # the release keeps every brain voxel at least once, mostly 1-8 times
    count = grid.coverage()
    brain = vol > 0
    assert count[brain].min() >= 1 and count[brain].max() == 8
    fast = fast_grid(brain)
    assert len(fast) * 5 < len(grid)
    assert (fast.coverage()[brain] == 1).all()
