"""Fidelity regions for ``bench_inference.py``: maps of a tile scheme computed on a region only.

A region's maps are exact when every tile whose kept core meets the region is run: those
tiles are run on the box that holds them, and the region is cropped out. Regions: the brain
centre, a cortical edge (a cube centred on the brain's outer boundary, about half brain and
half background) and a seam of the fast scheme (where several kept cores meet).
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from bmex_wf.metrics import psnr
from bmex_wf.models.inference import default_batch_size, memory_format, run_tiles
from bmex_wf.models.stitching import Stitcher
from bmex_wf.models.tiling import TileGrid, extract_tile

LOGGER = logging.getLogger("bench_inference")


def brain_centre(mask: np.ndarray) -> list[int]:
    """Middle of the mask's extent on each axis."""
    centre = []
    for axis in range(3):
        idx = np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != axis)))
        centre.append(int(idx[0] + idx[-1]) // 2)
    return centre


def cube_at(point, size: int, shape) -> tuple[slice, ...]:
    """A ``size``³ box centred on ``point``, moved inside ``shape``."""
    box = []
    for p, n in zip(point, shape):
        lo = int(np.clip(p - size // 2, 0, max(n - size, 0)))
        box.append(slice(lo, min(lo + size, n)))
    return tuple(box)


def regions(mask: np.ndarray, size: int, grid: TileGrid | None = None) -> dict[str, tuple[slice, ...]]:
    """Fidelity regions (``size``³ cubes): ``centre``, ``edge`` and, given ``grid``, ``seam``.

    ``centre``: at the brain centre. ``edge``: centred on the last brain voxel on the line
    through the centre along the first array axis (about half brain, half background).
    ``seam``: centred where the kept cores of several tiles of ``grid`` meet, next to the
    centre: the corner of the core holding the centre nearest to it, on the axes where the
    tile is ``grid.tile`` long (a column tile keeps the centre's coordinate along its length).
    """
    centre = brain_centre(mask)
    line = mask[:, centre[1], centre[2]]
    last = int(np.flatnonzero(line)[-1])
    out = {"centre": cube_at(centre, size, mask.shape),
           "edge": cube_at((last, centre[1], centre[2]), size, mask.shape)}
    if grid is not None:
        index = int(touching(grid, tuple(slice(c, c + 1) for c in centre))[0])
        start, edges = grid.starts[index], grid.size_of(index)
        point = []
        for c, s, n in zip(centre, start, edges):
            lo, hi = int(s) + grid.margin, int(s) + n - grid.margin
            point.append(c if n != grid.tile else (lo if c - lo < hi - c else hi))
        out["seam"] = cube_at(point, size, mask.shape)
    return out


def touching(grid: TileGrid, region) -> np.ndarray:
    """Indices of the tiles of ``grid`` whose kept core meets ``region``."""
    keep = []
    for index, (start, size) in enumerate(grid.tiles()):
        vol, _ = grid.keep_box(start, size)
        if all(v.start < r.stop and r.start < v.stop for v, r in zip(vol, region)):
            keep.append(index)
    return np.asarray(keep, dtype=np.int64)


def _holding_box(grid: TileGrid) -> tuple[tuple[slice, ...], TileGrid]:
    """The box holding every tile of ``grid`` (clipped to the volume) and the grid inside it."""
    ends = grid.starts + (grid.sizes if grid.sizes is not None else grid.tile)
    lo = np.maximum(grid.starts.min(axis=0), 0)
    hi = np.minimum(ends.max(axis=0), grid.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return box, grid.moved(hi - lo, lo)


def _crop(maps: np.ndarray, box, region) -> np.ndarray:
    local = tuple(slice(r.start - b.start, r.stop - b.start) for r, b in zip(region, box))
    return maps[(slice(None), *local)]


def engine_maps(net, vol: np.ndarray, grid: TileGrid, region, precision, *, device,
                counter_start: float = 0.0) -> tuple[np.ndarray, float, int]:
    """Maps (recon + 4 scores) of ``grid`` on ``region`` through the engine's model loop.

    Returns the maps, the seconds it took and the voxels the tiles it ran computed.
    """
    sub = grid.subset(touching(grid, region))
    box, local = _holding_box(sub)
    stitcher = Stitcher(local, 5, counter_start=counter_start, device=device)
    net = net.to(device, memory_format=memory_format(device))
    batch = default_batch_size(net, grid.tile, device) if device.type == "cpu" else 1
    t0 = time.perf_counter()
    maps = run_tiles(net, vol[box], local, stitcher, outputs=lambda r: torch.cat([r[1], r[0]], 1),
                     device=device, precision=precision, batch_size=batch, progress=False)
    return _crop(maps, box, region), time.perf_counter() - t0, local.voxels()


def warm_up(net, tile: int, device) -> None:
    """One untimed forward pass of a ``tile``³ patch in the release's layout."""
    with torch.inference_mode():
        net.to(device, memory_format=torch.contiguous_format)(torch.rand(1, 1, tile, tile, tile, device=device))


def release_maps(net, vol: np.ndarray, grid: TileGrid, region, counter_start: float,
                 device) -> tuple[np.ndarray, list[float]]:
    """The release's loop on ``region``: one patch per pass, float32, default layout; timed."""
    sub = grid.subset(touching(grid, region))
    box, local = _holding_box(sub)
    stitcher = Stitcher(local, 5, counter_start=counter_start, device=device)
    net = net.to(device, memory_format=torch.contiguous_format)
    times = []
    with torch.inference_mode():
        for start in local.starts:
            patch = torch.from_numpy(extract_tile(vol[box], start, grid.tile))[None, None].to(device)
            t0 = time.perf_counter()
            seg, recon = net(patch)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times.append(time.perf_counter() - t0)
            stitcher.add(start, torch.cat([recon, seg], 1)[0])
            LOGGER.debug("release patch %d/%d: %.2f s", len(times), len(local), times[-1])
    return _crop(stitcher.result(), box, region), times


def agreement(pairs) -> tuple[float, float]:
    """Recon PSNR (dB) and label agreement over the brain voxels of ``(ref, test, brain)`` pairs.

    Maps are ``(5, ...)`` (recon, 4 class scores); the PSNR peak is the reference's maximum
    over all the pairs' brain voxels, labels are the argmax of the class scores.
    """
    ref = np.concatenate([r[0][b] for r, _, b in pairs])
    test = np.concatenate([t[0][b] for _, t, b in pairs])
    same = np.concatenate([r[1:].argmax(0)[b] == t[1:].argmax(0)[b] for r, t, b in pairs])
    return psnr(test, ref, np.ones(ref.shape, bool), peak=float(ref.max())), float(same.mean())
