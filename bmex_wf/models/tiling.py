"""Tile geometry for whole-volume inference (no model, no stitching).

A :class:`TileGrid` lists tiles by their start corner in volume coordinates
(starts may be negative or run past the far edge: the missing part of a tile is
read as zeros) and, when they are not all ``tile``³, their sizes. Each tile
keeps only its inner region (its kept core), ``margin`` voxels away from every
face, clipped to the volume.

Layouts here (mask-fitted placement is in :mod:`.placement`):

* :func:`upstream_grid` reproduces the release's patch scheme (spec 8.4 steps
  6-7): zero padding of 40, bounding box from the positive slice sums with the
  release's clamps, starts ``range(first - 5, last + 5, 18)``, patch 40, keep
  the inner 30³.
* :func:`fast_grid` tiles the dilated brain mask with non-redundant keep
  regions (step = tile - 2·margin), keeping only tiles whose keep region
  touches the mask (placement ``lattice``).
* :func:`sliding_window_grid`: the skull-stripping windows of the release.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .networks import SIZE_MULTIPLE

#: Release patch scheme (spec 8.4): padding, patch size, step and kept margin.
UPSTREAM_PAD = 40
UPSTREAM_PATCH = 40
UPSTREAM_STEP = 18
UPSTREAM_MARGIN = 5

#: Lattice defaults (the fast scheme before mask-fitted placement, :mod:`.placement`).
FAST_TILE = 40
FAST_MARGIN = 5
FAST_DILATION = 2


@dataclass(frozen=True)
class TileGrid:
    """Tiles over a volume, cubic unless ``sizes`` says otherwise.

    Attributes
    ----------
    shape : tuple of int
        Shape of the volume the grid refers to.
    tile : int
        Edge length of every tile (a multiple of 8); for grids with ``sizes``, the
        cross-section edge.
    margin : int
        Voxels dropped at every face of a tile's output.
    starts : ndarray of int, shape (n, 3)
        Start corner of each tile in volume coordinates.
    sizes : ndarray of int, shape (n, 3), optional
        Edge lengths of each tile (multiples of 8); ``None``: every tile is ``tile``³.
    placement : str
        Rule that laid the tiles (for reports).
    """

    shape: tuple
    tile: int
    margin: int
    starts: np.ndarray
    sizes: np.ndarray | None = None
    placement: str = ""

    def __len__(self) -> int:
        return len(self.starts)

    def size_of(self, index: int) -> tuple[int, int, int]:
        """Edge lengths of tile ``index``."""
        if self.sizes is None:
            return (self.tile,) * 3
        return tuple(int(n) for n in self.sizes[index])

    def tiles(self):
        """Iterate over ``(start, size)`` of every tile."""
        for index, start in enumerate(self.starts):
            yield start, self.size_of(index)

    def keep_box(self, start, size=None) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
        """Return (volume slices, tile slices) of one tile's kept region, clipped to the volume.

        ``size`` defaults to ``tile``³. Either tuple is empty-sized along an axis when the
        kept region lies outside the volume.
        """
        size = (self.tile,) * 3 if size is None else size
        vol, loc = [], []
        for s, length, n in zip(start, size, self.shape):
            lo = max(int(s) + self.margin, 0)
            hi = min(int(s) + int(length) - self.margin, n)
            hi = max(hi, lo)
            vol.append(slice(lo, hi))
            loc.append(slice(lo - int(s), hi - int(s)))
        return tuple(vol), tuple(loc)

    def coverage(self) -> np.ndarray:
        """Number of tiles keeping each voxel (int32 array of ``shape``)."""
        count = np.zeros(self.shape, dtype=np.int32)
        for start, size in self.tiles():
            count[self.keep_box(start, size)[0]] += 1
        return count

    def uncovered(self, mask: np.ndarray) -> int:
        """Number of voxels of ``mask`` that no tile keeps."""
        return int(np.count_nonzero(np.asarray(mask, dtype=bool) & (self.coverage() == 0)))

    def voxels(self) -> int:
        """Voxels the network computes over all tiles."""
        if self.sizes is None:
            return len(self) * self.tile ** 3
        return int(np.prod(self.sizes, axis=1, dtype=np.int64).sum())

    def summary(self, mask: np.ndarray) -> dict:
        """Geometry facts for reports: placement, tile, margin, count, work against ``mask``.

        ``work_ratio`` is voxels computed ÷ voxels of ``mask``; ``uncovered_brain_voxels``
        counts voxels of ``mask`` in no tile's kept core (0 for a complete cover).
        """
        brain = int(np.count_nonzero(mask))
        voxels = self.voxels()
        return {"placement": self.placement, "tile": int(self.tile), "margin": int(self.margin),
                "tiles": len(self), "voxels_computed": voxels, "brain_voxels": brain,
                "work_ratio": round(voxels / brain, 3) if brain else float("nan"),
                "uncovered_brain_voxels": self.uncovered(mask)}

    def subset(self, index) -> TileGrid:
        """The grid of the tiles ``index`` (indices or a boolean selection)."""
        sizes = None if self.sizes is None else self.sizes[index]
        return replace(self, starts=self.starts[index], sizes=sizes)

    def moved(self, shape, offset) -> TileGrid:
        """The same tiles on a volume of ``shape`` whose origin lies at ``offset`` in this one."""
        return replace(self, shape=tuple(int(n) for n in shape),
                       starts=self.starts - np.asarray(offset, dtype=np.int64))


def check_tile(tile: int, margin: int) -> None:
    """Raise ``ValueError`` unless ``tile`` is a positive multiple of 8 with a usable margin."""
    if not isinstance(tile, (int, np.integer)) or tile <= 0 or tile % SIZE_MULTIPLE:
        raise ValueError(f"tile size must be a positive multiple of {SIZE_MULTIPLE}, got {tile!r}")
    if not isinstance(margin, (int, np.integer)) or margin < 0 or 2 * margin >= tile:
        raise ValueError(f"tile margin must be in [0, {(tile - 1) // 2}], got {margin!r}")


def extract_tile(volume: np.ndarray, start, size) -> np.ndarray:
    """Return the block of ``volume`` at ``start``, zero-filled outside the volume.

    ``size`` is one edge length (a cube) or three.
    """
    size = (int(size),) * 3 if np.ndim(size) == 0 else tuple(int(n) for n in size)
    out = np.zeros(size, dtype=np.float32)
    src, dst = [], []
    for s, length, n in zip(start, size, volume.shape):
        lo, hi = max(int(s), 0), min(int(s) + length, n)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - int(s), hi - int(s)))
    out[tuple(dst)] = volume[tuple(src)]
    return out


def _upstream_axis_range(profile: np.ndarray) -> tuple[int, int]:
    """Release bounding-box rule on one axis of the padded volume; returns (first, last)."""
    n = profile.size
    positive = profile > 0
    first = next((i for i in range(n - 1) if positive[i]), 0)
    last = next((i for i in range(n - 1, 0, -1) if positive[i]), n - 1)
    if first - 22.5 <= 0:
        first = 46
    if last + 45 >= n:
        last = n - 45
    return first, last


def upstream_grid(volume: np.ndarray, shift: int = 0) -> TileGrid:
    """Patch grid of the release (spec 8.4 steps 6-7) for ``volume`` in network order.

    Parameters
    ----------
    volume : ndarray
        3-D image as fed to the network (the release feeds the masked image).
    shift : int
        Start the grid this many voxels earlier (0 = the release, at most one step). Used to
        measure how much the release's output depends on where its grid happens to start.
    """
    if not 0 <= shift < UPSTREAM_STEP:
        raise ValueError(f"grid shift must be in [0, {UPSTREAM_STEP}), got {shift!r}")
    padded_shape = [n + 2 * UPSTREAM_PAD for n in volume.shape]
    axes = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        profile = np.zeros(padded_shape[axis])
        profile[UPSTREAM_PAD:UPSTREAM_PAD + volume.shape[axis]] = volume.sum(axis=other, dtype=np.float64)
        first, last = _upstream_axis_range(profile)
        padded_starts = range(first - UPSTREAM_MARGIN - shift, last + UPSTREAM_MARGIN, UPSTREAM_STEP)
        axes.append(np.asarray(padded_starts, dtype=np.int64) - UPSTREAM_PAD)
    return TileGrid(tuple(volume.shape), UPSTREAM_PATCH, UPSTREAM_MARGIN, _product(axes),
                    placement="release")


def _product(axes) -> np.ndarray:
    if any(len(a) == 0 for a in axes):
        return np.zeros((0, 3), dtype=np.int64)
    mesh = np.meshgrid(*axes, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def dilate_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Binary dilation of ``mask`` by a ``radius``-voxel cube, computed inside its bounding box."""
    mask = np.asarray(mask, dtype=bool)
    if radius <= 0:
        return mask
    box = bounding_box(mask)
    grown = tuple(slice(max(s.start - radius, 0), min(s.stop + radius, n)) for s, n in zip(box, mask.shape))
    out = np.zeros_like(mask)
    out[grown] = _max_filter(mask[grown], radius)
    return out


def _max_filter(mask: np.ndarray, radius: int) -> np.ndarray:
    """Separable cube max filter of a boolean array (outside counts as False)."""
    out = mask
    for axis in range(mask.ndim):
        src = np.moveaxis(out, axis, 0)
        acc = src.copy()
        for shift in range(1, radius + 1):
            acc[shift:] |= src[:-shift]
            acc[:-shift] |= src[shift:]
        out = np.moveaxis(acc, 0, axis)
    return out


def bounding_box(mask: np.ndarray) -> tuple[slice, ...]:
    """Slices of the smallest box holding every non-zero voxel of ``mask`` (which is non-empty)."""
    box = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(np.any(mask, axis=other))
        box.append(slice(int(idx[0]), int(idx[-1]) + 1))
    return tuple(box)


def fast_grid(mask: np.ndarray, tile: int = FAST_TILE, margin: int = FAST_MARGIN,
              dilation: int = FAST_DILATION) -> TileGrid:
    """Non-redundant tiles covering the dilated ``mask``.

    Keep regions (``tile - 2*margin`` voxels wide) tile the bounding box of the dilated
    mask without overlap, centred on it; only tiles whose keep region contains a voxel of
    the dilated mask are listed, so every such voxel is kept by exactly one tile.
    """
    check_tile(tile, margin)
    region = dilate_mask(mask, dilation)
    box = bounding_box(region)
    step = tile - 2 * margin
    axes, counts = [], []
    for sl in box:
        extent = sl.stop - sl.start
        n = math.ceil(extent / step)
        origin = sl.start - (n * step - extent) // 2
        axes.append(origin + step * np.arange(n))
        counts.append(n)
    # Which keep regions touch the dilated mask: block-wise "any" over a zero-padded copy.
    blocks = np.zeros([n * step for n in counts], dtype=bool)
    src, dst = [], []
    for a, sl in zip(axes, box):
        src.append(sl)
        dst.append(slice(sl.start - int(a[0]), sl.stop - int(a[0])))
    blocks[tuple(dst)] = region[tuple(src)]
    touched = blocks.reshape(counts[0], step, counts[1], step, counts[2], step).any(axis=(1, 3, 5))
    keep_starts = _product(axes).reshape(*counts, 3)[touched] - margin
    return TileGrid(tuple(mask.shape), tile, margin, keep_starts.astype(np.int64),
                    placement="lattice")


#: Skull-stripping windows of the release (MONAI sliding window, spec 8.3 step 7).
STRIP_WINDOW = 64
STRIP_OVERLAP = 0.85


def _window_starts(n: int, window: int, step: int) -> list[int]:
    """Window starts on one axis: 0, step, ... until the far edge is reached, last clamped."""
    if n <= window:
        return [-((window - n) // 2)]
    count = next(d for d in range(n) if d * step + window >= n) + 1
    return [min(d * step, n - window) for d in range(count)]


def sliding_window_grid(shape, window: int = STRIP_WINDOW, overlap: float = STRIP_OVERLAP) -> TileGrid:
    """MONAI-style sliding windows over ``shape`` (spec 8.3 step 7).

    The step is ``int(window * (1 - overlap))`` (9 for 64³ and 0.85). An axis shorter than
    the window gets one window centred on it (the zero padding of ``(window - n) // 2``
    before and the rest after, cropped back afterwards).
    """
    check_tile(window, 0)
    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"window overlap must be in [0, 1), got {overlap!r}")
    step = max(int(window * (1.0 - overlap)), 1)
    axes = [np.asarray(_window_starts(int(n), window, step), dtype=np.int64) for n in shape]
    return TileGrid(tuple(int(n) for n in shape), window, 0, _product(axes))
