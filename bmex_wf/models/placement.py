"""Mask-fitted tile placement: kept cores laid to fit the brain, not a fixed lattice.

The rule uses the mask alone (deterministic, no CPU dependence). The mask, dilated by
``dilation`` voxels, is cut into slabs one kept core thick along a first axis; each slab's
brain (projected) into rows along a second axis; each row's brain into runs along the third
(column) axis. Each level is covered greedily from its first brain voxel (the optimal 1-D
cover), each group of covers centred on the brain it covers without overlapping the previous
group. ``cubes`` covers a run with ``tile``³ tiles; ``columns`` with one tile of cross-section
``tile``² and a length fitted to the run (the kept core plus two margins, rounded up to a
multiple of 8; runs longer than ``max_length`` are split evenly; runs closer than the cost of
a second tile are merged). Of the six axis orders the one computing fewest voxels is used
(the first in ``itertools.permutations`` order on ties). Kept cores are pairwise disjoint,
and tiles may reach past the volume's edge (read as zeros).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .geometry import MAX_COLUMN_LENGTH, TileSpec
from .tiling import TileGrid, bounding_box, check_tile, dilate_mask, fast_grid

_MULTIPLE = 8


def _runs(profile: np.ndarray) -> list[tuple[int, int]]:
    """Maximal runs ``(first, end)`` of True in a 1-D boolean array."""
    idx = np.flatnonzero(profile)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > 1)
    firsts = np.r_[idx[0], idx[breaks + 1]]
    ends = np.r_[idx[breaks], idx[-1]] + 1
    return [(int(a), int(b)) for a, b in zip(firsts, ends)]


def _place(groups) -> list[int]:
    """Cover starts for ``(first, end, length)`` groups: slack centred, no overlap with the previous."""
    starts, prev_end = [], None
    for first, end, length in groups:
        start = first - (length - (end - first)) // 2
        if prev_end is not None:
            start = max(start, prev_end)
        starts.append(start)
        prev_end = start + length
    return starts


def cube_cover(profile: np.ndarray, keep: int) -> list[int]:
    """Starts of ``keep``-long kept cores covering every True of ``profile`` (greedy, disjoint)."""
    groups: list[tuple[int, int, int]] = []
    for first, end in _runs(profile):
        if groups and first < groups[-1][0] + groups[-1][2]:
            g_first, g_end, _ = groups[-1]
            g_end = max(g_end, end)
            groups[-1] = (g_first, g_end, math.ceil((g_end - g_first) / keep) * keep)
        else:
            groups.append((first, end, math.ceil((end - first) / keep) * keep))
    starts = []
    for (_, _, length), start in zip(groups, _place(groups)):
        starts.extend(range(start, start + length, keep))
    return starts


def _tile_length(run: int, margin: int) -> int:
    return math.ceil((run + 2 * margin) / _MULTIPLE) * _MULTIPLE


def column_cover(profile: np.ndarray, margin: int, max_length: int) -> list[tuple[int, int]]:
    """``(core start, tile length)`` of column tiles whose kept cores cover ``profile``."""
    merged: list[tuple[int, int]] = []
    for first, end in _runs(profile):
        if merged:
            m_first, m_end = merged[-1]
            joined = _tile_length(end - m_first, margin)
            apart = _tile_length(m_end - m_first, margin) + _tile_length(end - first, margin)
            if joined <= min(apart, max_length):
                merged[-1] = (m_first, end)
                continue
        merged.append((first, end))
    pieces = []
    for first, end in merged:
        count = math.ceil((end - first) / (max_length - 2 * margin))
        bounds = [first + round(i * (end - first) / count) for i in range(count + 1)]
        pieces.extend(itertools.pairwise(bounds))
    groups = [(a, b, _tile_length(b - a, margin) - 2 * margin) for a, b in pieces]
    return [(start, length + 2 * margin) for (_, _, length), start in zip(groups, _place(groups))]


def _fit_order(region: np.ndarray, order, spec: TileSpec, max_length: int):
    """Core starts and sizes (in ``region``'s axes) for one axis order."""
    keep = spec.tile - 2 * spec.margin
    arr = np.moveaxis(region, order, (0, 1, 2))
    starts, sizes = [], []
    for a in cube_cover(arr.any(axis=(1, 2)), keep):
        slab = arr[max(a, 0):a + keep].any(axis=0)
        for b in cube_cover(slab.any(axis=1), keep):
            row = slab[max(b, 0):b + keep].any(axis=0)
            if spec.placement == "cubes":
                cover = [(c, spec.tile) for c in cube_cover(row, keep)]
            else:
                cover = column_cover(row, spec.margin, max_length)
            for c, length in cover:
                start, size = [0, 0, 0], [0, 0, 0]
                for axis, value, edge in zip(order, (a, b, c), (spec.tile, spec.tile, length)):
                    start[axis], size[axis] = value, edge
                starts.append(start)
                sizes.append(size)
    return np.asarray(starts, dtype=np.int64).reshape(-1, 3), np.asarray(sizes, dtype=np.int64).reshape(-1, 3)


def fit_grid(mask: np.ndarray, spec: TileSpec, max_length: int = MAX_COLUMN_LENGTH) -> TileGrid:
    """Tiles whose kept cores cover the dilated ``mask``, placed by ``spec.placement``.

    ``lattice`` gives :func:`.tiling.fast_grid`; ``cubes`` and ``columns`` fit the mask as
    described in the module docstring.
    """
    check_tile(spec.tile, spec.margin)
    if spec.placement == "lattice":
        return fast_grid(mask, spec.tile, spec.margin, spec.dilation)
    if max_length < spec.tile or max_length % _MULTIPLE:
        raise ValueError(f"max_length must be a multiple of {_MULTIPLE} of at least the tile, got {max_length}")
    region = dilate_mask(mask, spec.dilation)
    box = bounding_box(region)
    region = region[box]
    offset = np.array([s.start for s in box], dtype=np.int64)
    best = None
    for order in itertools.permutations(range(3)):
        starts, sizes = _fit_order(region, order, spec, max_length)
        voxels = int(np.prod(sizes, axis=1).sum())
        if best is None or voxels < best[0]:
            best = (voxels, starts, sizes)
    _, starts, sizes = best
    starts = starts + offset - spec.margin
    return TileGrid(tuple(mask.shape), spec.tile, spec.margin, starts,
                    None if spec.placement == "cubes" else sizes, placement=spec.placement)
