"""Whole-volume inference with the BME-X networks: device and the model loop.

Geometry lives in :mod:`.tiling` and :mod:`.placement`, averaging in :mod:`.stitching`,
precision rules in :mod:`.precision`; this module runs the network over the tiles (batched,
under ``torch.inference_mode`` and autocast, the volume and the stitched maps on the
network's device) and returns maps on the input grid. Activations are only ever held for
one batch of tiles.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from tqdm.auto import tqdm

from .geometry import TileSpec, default_geometry, parse_geometry
from .networks import float32_layers, is_compact
from .placement import fit_grid
from .precision import (  # noqa: F401  (re-exported: the public names of the former module)
    BF16_MIN_PSNR_DB,
    Precision,
    cpu_has_native_bf16,
    network_precision,
    precision_name,
    resolve_precision,
)
from .stitching import UPSTREAM_COUNTER_START, Stitcher
from .tiling import TileGrid, sliding_window_grid, upstream_grid

LOGGER = logging.getLogger(__name__)

TILINGS = ("fast", "upstream")
#: Windows per forward pass of the skull-stripping network in the release.
STRIP_BATCH = 4
#: Rough activation memory per tile voxel and unit of width, for sizing GPU batches.
_GPU_BYTES_PER_VOXEL_WIDTH = 64


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device for ``device``: ``"auto"`` is CUDA when available, else CPU.

    Raises ``ValueError`` for an unknown device or CUDA requested without a usable GPU.
    """
    if isinstance(device, torch.device):
        dev = device
    elif device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {device!r}; use 'auto', 'cpu' or 'cuda[:N]'")
    return dev


def check_volume(volume) -> np.ndarray:
    """Return ``volume`` as a float32 3-D array; ``ValueError`` if not 3-D or not finite."""
    arr = np.asarray(volume)
    if arr.ndim != 3:
        raise ValueError(f"volume: expected a 3-D array, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"volume: expected a real numeric array, got dtype {arr.dtype}")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError("volume: contains NaN or infinite values")
    return arr


def check_mask(mask, shape) -> np.ndarray:
    """Return ``mask`` as a boolean array of ``shape``; ``ValueError`` if mismatched or empty."""
    arr = np.asarray(mask)
    if arr.shape != tuple(shape):
        raise ValueError(f"mask: shape {arr.shape} differs from the volume's shape {tuple(shape)}")
    if arr.dtype != bool and not np.isfinite(arr).all():
        raise ValueError("mask: contains NaN or infinite values")
    arr = arr != 0
    if not arr.any():
        raise ValueError("mask: no brain voxel (the mask is empty)")
    return arr


@contextlib.contextmanager
def _thread_count(num_threads: int | None):
    """Set torch's intra-op thread count for the block and restore it afterwards."""
    if num_threads is None:
        yield
        return
    if not isinstance(num_threads, (int, np.integer)) or num_threads < 1:
        raise ValueError(f"num_threads must be a positive integer, got {num_threads!r}")
    before = torch.get_num_threads()
    torch.set_num_threads(int(num_threads))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _cudnn_benchmark(device: torch.device):
    """Enable cuDNN autotuning on CUDA for the block (tiles all have one shape)."""
    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before


def default_batch_size(network: torch.nn.Module, tile, device: torch.device) -> int:
    """Tiles per forward pass: from free memory on CUDA; on CPU 2 for compact networks, else 1.

    ``tile`` is an edge length or the three edges of the largest tile. PyTorch sends a 3-D
    convolution with one sample and a small ``C·D·H`` (under 20,480) to its slow
    single-threaded kernel instead of oneDNN; compact networks hit that on most layers of a
    40³ tile. Two tiles per pass keep every layer on oneDNN: 0.22 s instead of 1.6 s per 40³
    tile for width 8 on 2 cores, while the official width 64 gains nothing from it
    (benchmarks/README.md).
    """
    if device.type != "cuda":
        return 2 if is_compact(network) else 1
    voxels = int(np.prod(tile)) if np.ndim(tile) else int(tile) ** 3
    free, _ = torch.cuda.mem_get_info(device)
    width = getattr(network, "width", 64)
    per_tile = voxels * width * _GPU_BYTES_PER_VOXEL_WIDTH
    return int(max(1, min(32, (free // 2) // per_tile)))


def _tile_batch(volume: torch.Tensor, starts: np.ndarray, size) -> torch.Tensor:
    """Tiles of ``size`` at ``starts`` from ``volume`` (zeros outside), as ``N, 1, *size``."""
    out = volume.new_zeros((len(starts), 1, *size))
    for n, start in enumerate(starts):
        src, dst = [], []
        for s, length, extent in zip(start, size, volume.shape):
            lo, hi = max(int(s), 0), min(int(s) + length, extent)
            src.append(slice(lo, max(hi, lo)))
            dst.append(slice(lo - int(s), max(hi, lo) - int(s)))
        out[(n, 0, *dst)] = volume[tuple(src)]
    return out


def _batches(grid: TileGrid, batch_size: int) -> Iterator[tuple[np.ndarray, tuple]]:
    """``(starts, size)`` of batches of equally sized tiles, sizes in order of first use."""
    sizes = [grid.size_of(i) for i in range(len(grid))]
    for size in dict.fromkeys(sizes):
        index = np.array([i for i, s in enumerate(sizes) if s == size])
        for first in range(0, len(index), batch_size):
            yield grid.starts[index[first:first + batch_size]], size


def memory_format(device: torch.device) -> torch.memory_format:
    """Layout for tiles and weights: channels-last on CPU, the default layout elsewhere.

    On an idle 2-core AVX2 CPU the official network E ran at the same speed in both layouts
    (about 99 GFLOP/s, benchmarks/README.md); channels-last is kept for CPU.
    """
    return torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format


def _as_precision(precision) -> Precision:
    return precision if isinstance(precision, Precision) else Precision(precision)


def run_tiles(network: torch.nn.Module, volume: np.ndarray, grid: TileGrid, stitcher: Stitcher, *,
              outputs, device: torch.device, precision: Precision | torch.dtype | None,
              batch_size: int, progress: bool = True, desc: str = "tiles") -> np.ndarray:
    """Run ``network`` on every tile of ``grid`` and stitch the outputs.

    ``outputs`` maps the network's return value to one ``N, C, D, H, W`` tensor. The volume
    is copied to ``device`` once; tiles are cut, run and stitched there (``stitcher`` should
    live on ``device``). ``precision`` is a :class:`Precision` or an autocast dtype. Returns
    ``stitcher.result()``.
    """
    precision = _as_precision(precision)
    dtype = precision.dtype
    autocast = torch.autocast(device_type=device.type, dtype=dtype or torch.float32,
                              enabled=dtype is not None)
    layout = memory_format(device)
    source = torch.from_numpy(np.ascontiguousarray(volume, dtype=np.float32)).to(device)
    bar = tqdm(total=len(grid), desc=desc, unit="tile", disable=not progress, leave=False)
    tail = float32_layers(network, precision.fp32_part if dtype is not None else None)
    with torch.inference_mode(), autocast, _cudnn_benchmark(device), tail, bar:
        for starts, size in _batches(grid, batch_size):
            batch = _tile_batch(source, starts, size).contiguous(memory_format=layout)
            result = outputs(network(batch)).float()
            for start, out in zip(starts, result):
                stitcher.add(start, out)
            bar.update(len(starts))
    return stitcher.result()


def _prepare(network: torch.nn.Module, device, precision, compile_network: bool):
    dev = resolve_device(device)
    chosen = network_precision(network, precision, dev)
    network = network.eval().to(dev, memory_format=memory_format(dev))
    if compile_network:
        network = torch.compile(network, dynamic=False)
    return network, dev, chosen


def _enhance_outputs(result) -> torch.Tensor:
    seg, recon = result
    return torch.cat([recon, seg], dim=1)


def _geometry(geometry, device: torch.device) -> TileSpec:
    if geometry is None:
        return default_geometry(device.type)
    return geometry if isinstance(geometry, TileSpec) else parse_geometry(geometry)


def enhance_grid(volume: np.ndarray, mask: np.ndarray | None, tiling: str,
                 geometry: TileSpec | None = None) -> tuple[TileGrid, float]:
    """Tile grid and stitching counter start for ``tiling`` (``"fast"`` or ``"upstream"``).

    ``"fast"`` lays tiles by ``geometry`` (default: the CPU geometry) over ``mask``
    (default: the positive voxels of ``volume``).
    """
    if tiling == "upstream":
        source = volume if mask is None else volume * mask
        return upstream_grid(source), UPSTREAM_COUNTER_START
    if tiling == "fast":
        spec = geometry or default_geometry("cpu")
        return fit_grid(volume > 0 if mask is None else mask, spec), 0.0
    raise ValueError(f"unknown tiling {tiling!r}; expected one of {TILINGS}")


@dataclass
class Enhancement:
    """Output of :func:`run_enhancement`: the maps and a report of how they were computed.

    ``report`` holds the device, precision, batch size, tiling and tile geometry
    (``geometry`` name, ``placement``, ``tile``, ``margin``, ``dilation``, ``tiles``,
    ``voxels_computed``, ``brain_voxels``, ``work_ratio``, ``uncovered_brain_voxels``).
    """

    recon: np.ndarray
    scores: np.ndarray
    report: dict = field(default_factory=dict)


def run_enhancement(volume, network: torch.nn.Module, *, mask=None, tiling: str = "fast",
                    geometry: TileSpec | str | None = None, device: str | torch.device = "auto",
                    precision: str = "auto", num_threads: int | None = None, progress: bool = True,
                    batch_size: int | None = None, compile: bool = False) -> Enhancement:
    """Run the enhancement network over a whole volume; see :func:`enhance_volume`.

    ``geometry`` (a :class:`TileSpec` or its name) sets the fast scheme's tiles; default:
    the geometry of the device kind (:func:`.geometry.default_geometry`).
    """
    vol = check_volume(volume)
    msk = None if mask is None else check_mask(mask, vol.shape)
    if msk is None and not (vol > 0).any():
        raise ValueError("volume: no positive voxel to enhance (all zero or negative)")
    with _thread_count(num_threads):
        net, dev, chosen = _prepare(network, device, precision, compile)
        spec = _geometry(geometry, dev)
        grid, counter_start = enhance_grid(vol, msk, tiling, spec)
        brain = vol > 0 if msk is None else msk
        batch = batch_size or default_batch_size(network, np.max(grid.sizes, axis=0)
                                                 if grid.sizes is not None else grid.tile, dev)
        report = {"device": str(dev), "precision": chosen.name, "batch_size": int(batch),
                  "tiling": tiling, "geometry": spec.name if tiling == "fast" else "release",
                  "dilation": spec.dilation if tiling == "fast" else None,
                  **grid.summary(brain)}
        LOGGER.info("enhancement: %d tiles (%s, %s), work ratio %.2f, on %s, %s", len(grid),
                    report["geometry"], grid.placement, report["work_ratio"], dev, chosen.name)
        stitcher = Stitcher(grid, 5, counter_start=counter_start, device=dev)
        maps = run_tiles(net, vol, grid, stitcher, outputs=_enhance_outputs, device=dev,
                         precision=chosen, batch_size=batch, progress=progress, desc="enhance")
    return Enhancement(maps[0], maps[1:], report)


def enhance_volume(volume, network: torch.nn.Module, *, mask=None, tiling: str = "fast",
                   geometry: TileSpec | str | None = None, device: str | torch.device = "auto",
                   precision: str = "auto", num_threads: int | None = None, progress: bool = True,
                   batch_size: int | None = None, compile: bool = False,
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Run the enhancement network over a whole volume.

    Parameters
    ----------
    volume : array_like
        3-D image in network order and template units (about 0-1000), usually the masked
        brain.
    network : torch.nn.Module
        Network E (returns ``(seg, recon)``); it is put in eval mode and moved to the device.
    mask : array_like, optional
        Brain mask of the same shape; default: the non-zero voxels of ``volume``. ``"fast"``
        covers its dilated extent; ``"upstream"`` takes its bounding box from
        ``volume * mask`` as the release does from the masked image.
    tiling : {"fast", "upstream"}
        ``"upstream"`` reproduces the release's patch scheme exactly (spec 8.4 steps 6-9).
    geometry : TileSpec or str, optional
        Tiles of the fast scheme (default: the device kind's, :mod:`.geometry`).
    device : str or torch.device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda[:N]"``.
    precision : {"auto", "fp32", "bf16", "bf16-tail32", "bf16-recon32", "fp16"}
        Autocast dtype; ``"auto"`` follows :func:`.precision.resolve_precision` (bfloat16 only
        for networks with a recorded bf16 fidelity of at least 45 dB, on devices that run it
        natively; else float32).
    num_threads : int, optional
        Torch CPU threads during the call (restored afterwards).
    progress : bool
        Show a tqdm progress bar.
    batch_size : int, optional
        Tiles per forward pass (default: :func:`default_batch_size`).
    compile : bool
        Wrap the network in ``torch.compile`` (opt-in; pays off only on long runs).

    Returns
    -------
    recon : ndarray
        Enhanced intensities, float32, shape of ``volume`` (0 where no tile reached).
    class_scores : ndarray
        The 4 averaged raw class scores (BG, CSF, GM, WM), float32, ``(4, *shape)``.

    :func:`run_enhancement` returns the same maps with a report of the geometry and settings.
    """
    result = run_enhancement(volume, network, mask=mask, tiling=tiling, geometry=geometry,
                             device=device, precision=precision, num_threads=num_threads,
                             progress=progress, batch_size=batch_size, compile=compile)
    return result.recon, result.scores


def skullstrip_volume(volume, network: torch.nn.Module, *, device: str | torch.device = "auto",
                      precision: str = "auto", num_threads: int | None = None,
                      progress: bool = True, batch_size: int | None = None) -> np.ndarray:
    """Run the skull-stripping network with the release's sliding windows (spec 8.3 step 7).

    Windows of 64³ start every 9 voxels (overlap 0.85), the last one clamped to the far
    edge; overlapping outputs are averaged with equal weights; an axis shorter than 64 is
    zero-padded (half before, the rest after) and cropped back.

    Parameters
    ----------
    volume : array_like
        3-D image in network order, already scaled as the network expects (spec 8.3 step 6).
    network : torch.nn.Module
        Network S (returns 4-channel probabilities).
    device, precision, num_threads, progress, batch_size
        As for :func:`enhance_volume` (default batch: 4 windows, as the release).

    Returns
    -------
    ndarray
        Averaged probabilities, float32, ``(4, *shape)``.
    """
    vol = check_volume(volume)
    grid = sliding_window_grid(vol.shape)
    with _thread_count(num_threads):
        net, dev, chosen = _prepare(network, device, precision, False)
        LOGGER.info("skull stripping: %d windows of %d³ on %s, %s", len(grid), grid.tile, dev,
                    chosen.name)
        stitcher = Stitcher(grid, 4, device=dev)
        return run_tiles(net, vol, grid, stitcher, outputs=lambda probs: probs, device=dev,
                         precision=chosen, batch_size=batch_size or STRIP_BATCH, progress=progress,
                         desc="skull strip")
