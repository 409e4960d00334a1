"""Stitching of tile outputs into whole-volume maps (crop and weighted averaging)."""

from __future__ import annotations

import numpy as np
import torch

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
        Blending weight over the kept region of a tile (shape ``(keep,)*3``, cubic grids
        only); uniform when omitted (plain averaging, as in the release).
    device : str or torch.device
        Where the sums live: tiles computed on a GPU are stitched there.

    Notes
    -----
    Sums are accumulated in the output array itself, so memory is one float32 map per
    channel plus one counter, whatever the number of tiles.
    """

    def __init__(self, grid: TileGrid, channels: int, *, counter_start: float = 0.0,
                 weight: np.ndarray | None = None, device: str | torch.device = "cpu"):
        keep = grid.tile - 2 * grid.margin
        if weight is not None and (grid.sizes is not None or np.shape(weight) != (keep,) * 3):
            raise ValueError(f"blending weight must have shape {(keep,) * 3} on a cubic grid, "
                             f"got {np.shape(weight)}")
        self.grid = grid
        self.device = torch.device(device)
        self.counter_start = float(counter_start)
        self.weight = None if weight is None else torch.as_tensor(
            np.asarray(weight, dtype=np.float32), device=self.device)
        self.sums = torch.zeros((channels, *grid.shape), dtype=torch.float32, device=self.device)
        self.counter = torch.full(tuple(grid.shape), self.counter_start, dtype=torch.float32,
                                  device=self.device)

    def add(self, start, output) -> None:
        """Add one tile ``output`` (``channels, *size``, array or tensor) started at ``start``."""
        output = torch.as_tensor(output).to(self.device, torch.float32)
        vol, loc = self.grid.keep_box(start, tuple(output.shape[1:]))
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
        """Return the averaged maps as a float32 array (``channels, *shape``; voxels no tile kept are 0).

        The accumulator is reused for the result: call once.
        """
        if self.counter_start > 0:
            self.sums /= self.counter
        else:
            # Unvisited voxels hold a zero sum: dividing them by one leaves them at 0.
            self.sums /= torch.where(self.counter > 0, self.counter, torch.ones_like(self.counter))
        del self.counter
        return self.sums.cpu().numpy()
