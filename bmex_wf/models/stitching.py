"""Stitching of tile outputs into whole-volume maps (crop and weighted averaging)."""

from __future__ import annotations

import numpy as np

from .tiling import TileGrid

#: The release's visit counter starts at this value (spec 8.4 step 8).
UPSTREAM_COUNTER_START = 1e-5


class Stitcher:
    """Accumulate the kept part of tile outputs and average overlaps.

    Parameters
    ----------
    grid : TileGrid
        Geometry the tiles come from.
    channels : int
        Output channels per tile.
    counter_start : float
        Initial value of the visit counter. ``0`` gives an exact weighted mean (voxels no
        tile keeps are 0); the release uses ``1e-5`` and divides by ``counter + 1e-5``.
    weight : ndarray, optional
        Blending weight over the kept region of a tile (shape ``(keep,)*3``); uniform when
        omitted (plain averaging, as in the release).

    Notes
    -----
    Sums are accumulated in the output array itself, so memory is one float32 map per
    channel plus one counter, whatever the number of tiles.
    """

    def __init__(self, grid: TileGrid, channels: int, *, counter_start: float = 0.0,
                 weight: np.ndarray | None = None):
        keep = grid.tile - 2 * grid.margin
        if weight is not None and np.shape(weight) != (keep,) * 3:
            raise ValueError(f"blending weight must have shape {(keep,) * 3}, got {np.shape(weight)}")
        self.grid = grid
        self.counter_start = float(counter_start)
        self.weight = None if weight is None else np.asarray(weight, dtype=np.float32)
        self.sums = np.zeros((channels, *grid.shape), dtype=np.float32)
        self.counter = np.full(grid.shape, self.counter_start, dtype=np.float32)

    def add(self, start, output: np.ndarray) -> None:
        """Add one tile ``output`` (``channels, tile, tile, tile``) started at ``start``."""
        vol, loc = self.grid.keep_box(start)
        if any(s.stop <= s.start for s in vol):
            return
        part = output[(slice(None), *loc)]
        if self.weight is None:
            self.sums[(slice(None), *vol)] += part
            self.counter[vol] += 1.0
            return
        m = self.grid.margin
        w = self.weight[tuple(slice(s.start - m, s.stop - m) for s in loc)]
        self.sums[(slice(None), *vol)] += part * w
        self.counter[vol] += w

    def result(self) -> np.ndarray:
        """Return the averaged maps (``channels, *shape``; voxels no tile kept are 0).

        The accumulator is reused for the result: call once.
        """
        if self.counter_start > 0:
            self.sums /= self.counter
            return self.sums
        # Unvisited voxels hold a zero sum, which ``where`` leaves in place.
        np.divide(self.sums, self.counter, out=self.sums, where=self.counter > 0)
        return self.sums
