"""Benchmark whole-volume enhancement: the release's patch scheme vs the fast scheme.

One process, one machine, one set of weights (network E built with the fixture rule), one
real brain from ``../shared/data/test_BIDS`` (reoriented to LPS, network order, histogram
matched to the 24-month template). Run from the repository root::

    nice -n 5 python benchmarks/bench_inference.py          # full, official-size network
    python benchmarks/bench_inference.py --quick             # reduced smoke run (< 3 min)

Timing of the release scheme: its patches are run one per forward pass in float32 with the
default memory layout, as the release does, on a contiguous block of ``--sample`` patches
(a patch costs the same wherever it lies) and extrapolated to its full patch count.
Fidelity: the exact release output is computed on the region that a 2x2x2 sub-block of that
sample fully determines; the release with its grid started 9 voxels earlier is computed on
the same region, and both are compared with the fast scheme's output there (brain voxels).
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bmex_wf.image.orientation import reorient_to_lps, to_network_order
from bmex_wf.models.checkpoints import load_network
from bmex_wf.models.inference import (
    enhance_volume,
    memory_format,
    network_precision,
    precision_name,
    run_tiles,
)
from bmex_wf.models.networks import build_network
from bmex_wf.models.registry import builtin_model_path
from bmex_wf.models.stitching import UPSTREAM_COUNTER_START, Stitcher
from bmex_wf.models.tiling import (
    TileGrid,
    extract_tile,
    fast_grid,
    upstream_grid,
)
from bmex_wf.preproc.intensity import match_histogram, template_landmarks
from bmex_wf.testing.rule_weights import apply_rule_weights

LOGGER = logging.getLogger("bench_inference")
SHARED = ROOT.parent / "shared" / "data"
CPU = torch.device("cpu")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="reduced run: width-8 network on a 40³ brain crop, 8-patch sample")
    parser.add_argument("--subject", default="sub-0002", help="test_BIDS subject (24 months)")
    parser.add_argument("--template", default="Template-Month24-T1w", help="age template")
    parser.add_argument("--width", type=int, default=None, help="network width (default 64)")
    parser.add_argument("--model", type=Path, default=None,
                        help="trained network E file instead of fixture-rule weights (its width "
                             "is read from the file; 'builtin' = the shipped model)")
    parser.add_argument("--crop", type=int, default=None, help="crop the brain to this cube")
    parser.add_argument("--sample", type=int, default=None,
                        help="release patches timed (a 2x3x5 block = 30 by default)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--region", type=int, default=None,
                        help="edge of the fidelity region (at most 24)")
    parser.add_argument("--alt-margin", type=int, default=None,
                        help="also measure fidelity of 40³ tiles with this margin (-1: skip)")
    parser.add_argument("--fast-sample", action="store_true",
                        help="time the fast scheme on its tiles over the fidelity region and "
                             "extrapolate (for a heavily loaded machine)")
    parser.add_argument("--skip-other-precision", action="store_true",
                        help="skip the one-tile run in the other precision (bf16 is emulated and "
                             "very slow for the official network on CPUs without native bf16)")
    parser.add_argument("--compile-check", action="store_true",
                        help="only measure torch.compile: compile time and seconds per tile")
    args = parser.parse_args(argv)
    quick = {"width": 8, "crop": 40, "sample": 8, "region": 15, "alt_margin": -1}
    full = {"width": 64, "crop": 0, "sample": 30, "region": 24, "alt_margin": 4}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


def benchmark_network(args) -> torch.nn.Module:
    """Network E: fixture-rule weights at ``--width``, or the trained file ``--model``."""
    if args.model is None:
        return apply_rule_weights(build_network("enhance", args.width))
    path = builtin_model_path() if str(args.model) == "builtin" else args.model
    net = load_network(path, "enhance")
    args.width = net.width
    return net


def load_volume(subject: str, template: str, crop: int) -> tuple[np.ndarray, np.ndarray]:
    """Brain in network order and template units, and its mask (non-zero voxels)."""
    anat = SHARED / "test_BIDS" / subject
    path = next(anat.rglob(f"{subject}*_T1w.nii.gz"))
    img = reorient_to_lps(nib.load(path))
    data = to_network_order(np.asarray(img.dataobj, dtype=np.float32))
    mask = data > 0
    vol = np.where(mask, match_histogram(data, template_landmarks(template)), 0).astype(np.float32)
    LOGGER.info("%s: %s voxels, %d brain voxels", path.name, vol.shape, mask.sum())
    if crop:
        centre = [int(np.mean(np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a)))))
                  for a in range(3)]
        box = tuple(slice(max(c - crop // 2, 0), max(c - crop // 2, 0) + crop) for c in centre)
        vol, mask = np.ascontiguousarray(vol[box]), mask[box]
    return vol, mask


def subgrid(grid: TileGrid, starts: np.ndarray) -> tuple[tuple[slice, ...], TileGrid]:
    """A box holding the windows of ``starts`` (clipped to the volume) and the grid inside it.

    Tiles read from the box equal tiles read from the whole volume (zeros outside both).
    """
    lo = np.maximum(starts.min(axis=0), 0)
    hi = np.minimum(starts.max(axis=0) + grid.tile, grid.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    return box, TileGrid(tuple(int(b - a) for a, b in zip(lo, hi)), grid.tile, grid.margin,
                         starts - lo)


def release_block(grid: TileGrid, mask: np.ndarray, sizes=(2, 3, 5)) -> np.ndarray:
    """Starts of a block of consecutive release patches (``sizes`` per axis) at the brain centre."""
    axes = [np.unique(grid.starts[:, a]) for a in range(3)]
    centre = [np.mean(np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a))))
              for a in range(3)]
    chosen = []
    for values, c, n in zip(axes, centre, sizes):
        n = min(n, len(values))
        first = int(np.clip(np.argmin(np.abs(values + grid.tile / 2 - c)) - (n - 1) // 2,
                            0, len(values) - n))
        chosen.append(values[first:first + n])
    mesh = np.meshgrid(*chosen, indexing="ij")
    return np.stack([m.ravel() for m in mesh], axis=1)


def determined_box(grid: TileGrid, starts: np.ndarray) -> tuple[slice, ...]:
    """Bounding box of the voxels that only patches in ``starts`` keep (all of them)."""
    full = grid.coverage()
    part = TileGrid(grid.shape, grid.tile, grid.margin, starts).coverage()
    ok = (part == full) & (part > 0)
    idx = [np.flatnonzero(ok.any(axis=tuple(b for b in range(3) if b != a))) for a in range(3)]
    return tuple(slice(int(i[0]), int(i[-1]) + 1) for i in idx)


def run_release_patches(net, vol, grid: TileGrid, starts):
    """Release-style loop: one patch per forward pass, float32, default layout; timed."""
    box, sub = subgrid(grid, starts)
    stitcher = Stitcher(sub, 5, counter_start=UPSTREAM_COUNTER_START)
    times = []
    net = net.to(memory_format=torch.contiguous_format)
    with torch.inference_mode():
        for start in sub.starts:
            patch = torch.from_numpy(extract_tile(vol[box], start, grid.tile))[None, None]
            t0 = time.perf_counter()
            seg, recon = net(patch)
            times.append(time.perf_counter() - t0)
            stitcher.add(start, torch.cat([recon, seg], 1)[0].numpy())
            LOGGER.info("release patch %d/%d: %.2f s", len(times), len(sub), times[-1])
    return (box, stitcher.result()), times


def run_engine_tiles(net, vol, grid: TileGrid, starts, dtype, counter_start=0.0):
    """Tiles ``starts`` of ``grid`` through the engine's model loop; maps and seconds per tile."""
    box, sub = subgrid(grid, starts)
    stitcher = Stitcher(sub, 5, counter_start=counter_start)
    net = net.to(memory_format=memory_format(CPU))
    t0 = time.perf_counter()
    maps = run_tiles(net, np.ascontiguousarray(vol[box]), sub, stitcher,
                     outputs=lambda r: torch.cat([r[1], r[0]], 1), device=CPU, precision=dtype,
                     batch_size=1, progress=False)
    return (box, maps), (time.perf_counter() - t0) / len(sub)


def crop_maps(computed, region) -> np.ndarray:
    """Values over ``region`` of ``(box, maps)`` computed on a box holding it."""
    box, maps = computed
    local = tuple(slice(r.start - b.start, r.stop - b.start) for r, b in zip(region, box))
    if any(s.start < 0 or s.stop > b.stop - b.start for s, b in zip(local, box)):
        raise RuntimeError("region outside the computed box")
    return maps[(slice(None), *local)]


def touching(grid: TileGrid, region) -> np.ndarray:
    """Starts of the tiles of ``grid`` whose kept region intersects ``region``."""
    keep = []
    for start in grid.starts:
        vol, _ = grid.keep_box(start)
        if all(v.start < r.stop and r.start < v.stop for v, r in zip(vol, region)):
            keep.append(start)
    return np.asarray(keep, dtype=np.int64).reshape(-1, 3)


def agreement(ref: np.ndarray, test: np.ndarray, brain: np.ndarray, peak: float) -> tuple[float, float]:
    """Recon PSNR (dB, peak = ``peak``) and label agreement over ``brain``; maps are (5, ...)."""
    mse = float(np.mean((ref[0][brain].astype(np.float64) - test[0][brain]) ** 2))
    psnr = float("inf") if mse == 0 else 10 * np.log10(peak ** 2 / mse)
    labels = float(np.mean(ref[1:].argmax(0)[brain] == test[1:].argmax(0)[brain]))
    return psnr, labels


def flops_per_tile(net, tile: int = 40) -> float:
    """FLOPs of one ``tile``³ forward pass, counted on 8³ and scaled (they grow with voxels)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net(torch.zeros(1, 1, 8, 8, 8))
    return float(counter.get_total_flops()) * (tile / 8) ** 3


def whole_volume_one_tile(net, vol, mask, threads: int) -> tuple[float, float]:
    """Peak RSS (GB) and seconds of the engine on the whole volume with a one-tile mask.

    The engine's memory does not grow with the number of tiles (one tile's activations at a
    time, whole-volume output maps), so this gives the whole-brain run's peak.
    """
    one = np.zeros_like(mask)
    centre = [int(np.mean(np.flatnonzero(mask.any(axis=tuple(b for b in range(3) if b != a)))))
              for a in range(3)]
    one[tuple(slice(c - 10, c + 10) for c in centre)] = True
    t0 = time.perf_counter()
    enhance_volume(vol, net, mask=one, device="cpu", num_threads=threads, progress=False)
    return peak_rss_gb(), time.perf_counter() - t0


def best_tile_seconds(net, dtype, repeats: int = 2, first: list | None = None) -> float:
    """Best time of one 40³ forward pass through the engine's layout and precision.

    The first (warm-up) call's time is appended to ``first`` when given.
    """
    net = net.to(memory_format=memory_format(CPU))
    x = torch.rand(1, 1, 40, 40, 40).mul(1000).contiguous(memory_format=memory_format(CPU))
    autocast = torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None)
    times = []
    with torch.inference_mode(), autocast:
        t0 = time.perf_counter()
        net(x)
        if first is not None:
            first.append(time.perf_counter() - t0)
        for _ in range(repeats):
            t0 = time.perf_counter()
            net(x)
            times.append(time.perf_counter() - t0)
    return min(times)


def compile_check(args, net, dtype, n_tiles: int) -> None:
    """Print whether ``torch.compile`` pays for its compile time on one brain."""
    eager = best_tile_seconds(net, dtype)
    warmup: list = []
    compiled = best_tile_seconds(torch.compile(net, dynamic=False), dtype, first=warmup)
    compile_s = warmup[0] - compiled
    saved = n_tiles * (eager - compiled)
    print(f"# torch.compile, network E width {args.width}, {precision_name(dtype)}, "
          f"{args.threads} threads, {n_tiles} tiles per brain")
    print(f"eager {eager:.2f} s/tile, compiled {compiled:.2f} s/tile, compile time "
          f"{compile_s:.1f} s, saved per brain {saved:.1f} s -> "
          f"{'pays off' if saved > compile_s else 'does not pay off'}")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    rows = []
    vol, mask = load_volume(args.subject, args.template, args.crop)
    net = benchmark_network(args)
    default = network_precision(net, "auto", CPU).dtype
    other = None if default is not None else torch.bfloat16
    if args.compile_check:
        compile_check(args, net, default, len(fast_grid(mask)))
        return 0
    flops = flops_per_tile(net)

    # Release scheme: timed sample, exact output on the region the sample determines.
    grid_up = upstream_grid(vol)
    sizes = (2, 2, 2) if args.sample <= 8 else (2, 2 if args.sample <= 12 else 3,
                                                 -(-args.sample // (4 if args.sample <= 12 else 6)))
    block = release_block(grid_up, mask, sizes)
    release, times = run_release_patches(net, vol, grid_up, block)
    per_patch = float(np.mean(times))
    upstream_s = per_patch * len(grid_up)
    rows.append((f"release scheme (timed {len(times)} patches, extrapolated)", "fp32",
                 len(grid_up), upstream_s))
    LOGGER.info("release: %.1f s per patch, %d patches -> %.0f s", per_patch, len(grid_up),
                upstream_s)
    centre_block = release_block(grid_up, mask, (2, 2, 2))
    region = tuple(slice(r.start, min(r.stop, r.start + args.region))
                   for r in determined_box(grid_up, centre_block))
    brain = mask[region]
    ref = crop_maps(release, region)
    peak = float(ref[0][brain].max())

    # Fast scheme, default precision: the whole brain, or its tiles over the region (timed).
    grid_fast = fast_grid(mask)
    if args.fast_sample:
        # the one-tile whole-volume run first: it also warms the engine up
        rss_fast, single = whole_volume_one_tile(net, vol, mask, args.threads)
        rows.append(("fast engine, whole volume, one tile (peak RSS)", precision_name(default), 1,
                     single))
        fast_maps, fast_per_tile = run_engine_tiles(net, vol, grid_fast,
                                                    touching(grid_fast, region), default)
        fast_s = fast_per_tile * len(grid_fast)
        n_timed = len(touching(grid_fast, region))
        rows.append((f"fast scheme (timed {n_timed} tiles, extrapolated)",
                     precision_name(default), len(grid_fast), fast_s))
    else:
        t0 = time.perf_counter()
        recon, scores = enhance_volume(vol, net, mask=mask, device="cpu",
                                       num_threads=args.threads, progress=not args.quick)
        fast_s = time.perf_counter() - t0
        rss_fast = peak_rss_gb()
        whole = tuple(slice(0, n) for n in vol.shape)
        fast_maps = (whole, np.concatenate([recon[None], scores]))
        del recon, scores
        rows.append(("fast scheme, whole brain", precision_name(default), len(grid_fast), fast_s))
    psnr, labels = agreement(ref, crop_maps(fast_maps, region), brain, peak)
    LOGGER.info("fast: %.0f s; vs release %.2f dB %.4f", fast_s, psnr, labels)

    # The release with its grid started 9 voxels earlier, on the same region.
    grid_shift = upstream_grid(vol, shift=9)
    shifted, shift_per_patch = run_engine_tiles(net, vol, grid_shift, touching(grid_shift, region),
                                                None, UPSTREAM_COUNTER_START)
    rows.append(("release scheme through this engine (extrapolated)", "fp32", len(grid_up),
                 shift_per_patch * len(grid_up)))
    self_psnr, self_labels = agreement(ref, crop_maps(shifted, region), brain, peak)
    LOGGER.info("release shifted vs release: %.2f dB %.4f", self_psnr, self_labels)
    fidelity = [("fast vs release", region, psnr, labels),
                ("release shifted 9 vs release", region, self_psnr, self_labels)]
    if not args.fast_sample:
        big_region = determined_box(grid_up, block)
        big_brain = mask[big_region]
        big_ref = crop_maps(release, big_region)
        fidelity.append(("fast vs release (whole sample region)", big_region,
                         *agreement(big_ref, crop_maps(fast_maps, big_region), big_brain,
                                    float(big_ref[0][big_brain].max()))))

    # Precision: one of the fast scheme's tiles over the region in the other precision.
    prec_psnr = prec_labels = float("nan")
    if not args.skip_other_precision:
        centre_tiles = touching(grid_fast, region)[:1]
        lowp, other_per_tile = run_engine_tiles(net, vol, grid_fast, centre_tiles, other)
        kept = grid_fast.keep_box(centre_tiles[0])[0]
        kept_brain = mask[kept]
        fp32_maps = crop_maps(fast_maps, kept)
        prec_psnr, prec_labels = agreement(fp32_maps, crop_maps(lowp, kept), kept_brain,
                                           float(fp32_maps[0][kept_brain].max()))
        LOGGER.info("precision: %.2f dB %.4f", prec_psnr, prec_labels)
        other_name = "fp32" if default is not None else "bf16"
        rows.append((f"fast scheme in {other_name} (1 tile timed, extrapolated)", other_name,
                     len(grid_fast), other_per_tile * len(grid_fast)))

    if args.alt_margin >= 0:
        grid_alt = fast_grid(mask, 40, args.alt_margin)
        alt, _ = run_engine_tiles(net, vol, grid_alt, touching(grid_alt, region), default)
        alt_psnr, alt_labels = agreement(ref, crop_maps(alt, region), brain, peak)
        fidelity.append((f"40³ tiles margin {args.alt_margin} vs release", region, alt_psnr,
                         alt_labels))
        rows.append((f"40³ tiles margin {args.alt_margin}, whole brain (tile count)",
                     precision_name(default), len(grid_alt), float("nan")))

    best = fast_s / len(grid_fast) if args.fast_sample else best_tile_seconds(net, default)
    peak_rss = peak_rss_gb()
    report(args, vol, rows, fidelity, flops, fast_s, len(grid_fast), per_patch, best,
           (prec_psnr, prec_labels), rss_fast)
    speedup = upstream_s / fast_s
    print(f"speedup={speedup:.2f} fast_s={fast_s:.1f} upstream_s={upstream_s:.1f} "
          f"psnr_db={psnr:.2f} label_agreement={labels:.4f} peak_rss_gb={peak_rss:.2f} "
          f"release_self_psnr_db={self_psnr:.2f} release_self_label_agreement={self_labels:.4f}")
    return 0


def report(args, vol, rows, fidelity, flops, fast_s, n_fast, per_patch, best, prec, rss_fast):
    """Print the result table."""
    cpu = torch.backends.cpu.get_cpu_capability()
    weights = "fixture-rule weights" if args.model is None else f"weights {args.model}"
    print(f"# network E width {args.width}, {weights}; image {args.subject} "
          f"{vol.shape}; {args.threads} threads; CPU capability {cpu}; torch {torch.__version__}")
    print(f"{'run':58s} {'prec':5s} {'tiles':>6s} {'seconds':>10s}")
    for name, prec_name, count, seconds in rows:
        print(f"{name:58s} {prec_name:5s} {count:6d} {seconds:10.1f}")
    print(f"{'fidelity (recon PSNR over brain, label agreement)':58s} {'region':>14s}")
    for name, region, psnr, labels in fidelity:
        size = "x".join(str(r.stop - r.start) for r in region)
        print(f"{name:58s} {size:>14s} {psnr:7.2f} dB {labels:.4f}")
    print(f"bf16 vs fp32 of the fast scheme (one tile): recon PSNR {prec[0]:.2f} dB, "
          f"label agreement {prec[1]:.4f}")
    print(f"GFLOP per 40³ tile: {flops / 1e9:.1f}; fast run {n_fast * flops / 1e9 / fast_s:.1f} "
          f"GFLOP/s; best single tile {flops / 1e9 / best:.1f} GFLOP/s; release loop "
          f"{flops / 1e9 / per_patch:.1f} GFLOP/s")
    print(f"peak RSS after the fast run: {rss_fast:.2f} GB")


if __name__ == "__main__":
    sys.exit(main())
