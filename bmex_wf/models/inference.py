"""Whole-volume inference with the BME-X networks: device, precision and the model loop.

Geometry lives in :mod:`.tiling`, averaging in :mod:`.stitching`; this module runs the
network over the tiles (batched, under ``torch.inference_mode`` and autocast) and returns
maps on the input grid. Activations are only ever held for one batch of tiles.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .networks import is_compact
from .stitching import UPSTREAM_COUNTER_START, Stitcher
from .tiling import TileGrid, extract_tile, fast_grid, sliding_window_grid, upstream_grid

LOGGER = logging.getLogger(__name__)

TILINGS = ("fast", "upstream")
_PRECISIONS = {
    "fp32": None, "float32": None,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}
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


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: AVX-512 kernels plus AVX512-BF16 or AMX."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512":
        return False
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return False
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            return bool(set(line.split(":", 1)[1].split()) & {"avx512_bf16", "amx_bf16"})
    return False


def resolve_precision(precision: str, device: torch.device,
                      compact: bool = False) -> torch.dtype | None:
    """Autocast dtype for ``precision`` on ``device`` (``None`` means plain float32).

    ``"auto"``: bfloat16 on CUDA GPUs that support it, else float16; on CPU bfloat16 when
    the CPU computes it natively and the network is not ``compact``, else float32.
    Compact networks (narrower than the official ones) are cheap in float32, and the
    built-in model's output differed from float32 by 32 dB PSNR under bfloat16
    (benchmarks/README.md), so they keep float32 on CPU.
    """
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_native_bf16() and not compact else None
    if precision not in _PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use 'auto', 'fp32', 'bf16' or 'fp16'")
    return _PRECISIONS[precision]


def precision_name(dtype: torch.dtype | None) -> str:
    """Short name of an autocast dtype (``fp32`` for ``None``)."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


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


def default_batch_size(network: torch.nn.Module, tile: int, device: torch.device) -> int:
    """Tiles per forward pass: from free memory on CUDA; on CPU 2 for compact networks, else 1.

    PyTorch sends a 3-D convolution with one sample and a small ``C·D·H`` (under 20,480) to
    its slow single-threaded kernel instead of oneDNN; compact networks hit that on most
    layers. Two tiles per pass keep every layer on oneDNN: 0.22 s instead of 1.6 s per 40³
    tile for width 8 on 2 cores, while the official width 64 gains nothing from it
    (benchmarks/README.md).
    """
    if device.type != "cuda":
        return 2 if is_compact(network) else 1
    free, _ = torch.cuda.mem_get_info(device)
    width = getattr(network, "width", 64)
    per_tile = tile ** 3 * width * _GPU_BYTES_PER_VOXEL_WIDTH
    return int(max(1, min(32, (free // 2) // per_tile)))


def _batches(volume: np.ndarray, grid: TileGrid,
             batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    for first in range(0, len(grid), batch_size):
        starts = grid.starts[first:first + batch_size]
        tiles = np.stack([extract_tile(volume, s, grid.tile) for s in starts])
        yield starts, tiles[:, None]


def memory_format(device: torch.device) -> torch.memory_format:
    """Layout for tiles and weights: channels-last on CPU, the default layout elsewhere.

    On an idle 2-core AVX2 CPU the official network E ran at the same speed in both layouts
    (about 99 GFLOP/s, benchmarks/README.md); channels-last is kept for CPU.
    """
    return torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format


def run_tiles(network: torch.nn.Module, volume: np.ndarray, grid: TileGrid, stitcher: Stitcher, *,
              outputs, device: torch.device, dtype: torch.dtype | None, batch_size: int,
              progress: bool = True, desc: str = "tiles") -> np.ndarray:
    """Run ``network`` on every tile of ``grid`` and stitch the outputs.

    ``outputs`` maps the network's return value to one ``N, C, D, H, W`` tensor. Returns
    ``stitcher.result()``.
    """
    autocast = torch.autocast(device_type=device.type, dtype=dtype or torch.float32,
                              enabled=dtype is not None)
    layout = memory_format(device)
    bar = tqdm(total=len(grid), desc=desc, unit="tile", disable=not progress, leave=False)
    with torch.inference_mode(), autocast, _cudnn_benchmark(device), bar:
        for starts, tiles in _batches(volume, grid, batch_size):
            batch = torch.from_numpy(tiles).to(device, non_blocking=True)
            batch = batch.contiguous(memory_format=layout)
            result = outputs(network(batch)).float().cpu().numpy()
            for start, out in zip(starts, result):
                stitcher.add(start, out)
            bar.update(len(starts))
    return stitcher.result()


def network_precision(network: torch.nn.Module, precision: str,
                      device: torch.device) -> torch.dtype | None:
    """:func:`resolve_precision` for ``network`` (compact networks keep float32 on CPU)."""
    return resolve_precision(precision, device, is_compact(network))


def _prepare(network: torch.nn.Module, device, precision, compile_network: bool):
    dev = resolve_device(device)
    dtype = network_precision(network, precision, dev)
    network = network.eval().to(dev, memory_format=memory_format(dev))
    if compile_network:
        network = torch.compile(network, dynamic=False)
    return network, dev, dtype


def _enhance_outputs(result) -> torch.Tensor:
    seg, recon = result
    return torch.cat([recon, seg], dim=1)


def enhance_grid(volume: np.ndarray, mask: np.ndarray | None, tiling: str) -> tuple[TileGrid, float]:
    """Tile grid and stitching counter start for ``tiling`` (``"fast"`` or ``"upstream"``)."""
    if tiling == "upstream":
        source = volume if mask is None else volume * mask
        return upstream_grid(source), UPSTREAM_COUNTER_START
    if tiling == "fast":
        return fast_grid(volume > 0 if mask is None else mask), 0.0
    raise ValueError(f"unknown tiling {tiling!r}; expected one of {TILINGS}")


def enhance_volume(volume, network: torch.nn.Module, *, mask=None, tiling: str = "fast",
                   device: str | torch.device = "auto", precision: str = "auto",
                   num_threads: int | None = None, progress: bool = True,
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
        tiles only its dilated extent; ``"upstream"`` takes its bounding box from
        ``volume * mask`` as the release does from the masked image.
    tiling : {"fast", "upstream"}
        ``"upstream"`` reproduces the release's patch scheme exactly (spec 8.4 steps 6-9).
    device : str or torch.device
        ``"auto"`` (CUDA when available), ``"cpu"``, ``"cuda[:N]"``.
    precision : {"auto", "fp32", "bf16", "fp16"}
        Autocast dtype; ``"auto"`` picks bf16/fp16 on CUDA, bf16 on CPUs with native
        bfloat16 for official-width networks, else float32 (:func:`resolve_precision`).
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
    """
    vol = check_volume(volume)
    msk = None if mask is None else check_mask(mask, vol.shape)
    if msk is None and not (vol > 0).any():
        raise ValueError("volume: no positive voxel to enhance (all zero or negative)")
    grid, counter_start = enhance_grid(vol, msk, tiling)
    with _thread_count(num_threads):
        net, dev, dtype = _prepare(network, device, precision, compile)
        LOGGER.info("enhancement: %d tiles of %d³ (%s tiling) on %s, %s", len(grid), grid.tile,
                    tiling, dev, precision_name(dtype))
        stitcher = Stitcher(grid, 5, counter_start=counter_start)
        maps = run_tiles(net, vol, grid, stitcher, outputs=_enhance_outputs, device=dev, dtype=dtype,
                         batch_size=batch_size or default_batch_size(network, grid.tile, dev),
                         progress=progress, desc="enhance")
    return maps[0], maps[1:]


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
        net, dev, dtype = _prepare(network, device, precision, False)
        LOGGER.info("skull stripping: %d windows of %d³ on %s, %s", len(grid), grid.tile, dev,
                    precision_name(dtype))
        stitcher = Stitcher(grid, 4)
        return run_tiles(net, vol, grid, stitcher, outputs=lambda probs: probs, device=dev,
                         dtype=dtype, batch_size=batch_size or STRIP_BATCH, progress=progress,
                         desc="skull strip")
