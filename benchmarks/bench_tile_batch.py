"""Seconds per 40³ tile of network E on this CPU, by network width, tiles per pass and precision.

Usage: ``python benchmarks/bench_tile_batch.py [--widths 8 16 64] [--batches 1 2 4]
[--precisions fp32 bf16 bf16-recon32] [--shape 40 40 40]``. Prints one row per width, batch
size and precision (channels-last, as ``enhance_volume`` runs on CPU; seconds per 40³ of
voxels for other ``--shape``) and, as the last line, the fastest batch size per width and
precision.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bmex_wf.models.networks import build_network, float32_layers
from bmex_wf.models.precision import machine_line, resolve_precision


def seconds_per_tile(width: int, batch: int, precision: str = "fp32", shape=(40, 40, 40),
                     repeats: int = 2) -> float:
    """Mean wall time per 40³ of voxels of ``repeats`` forward passes (after one warm-up)."""
    layout = torch.channels_last_3d
    chosen = resolve_precision(precision, torch.device("cpu"))
    net = build_network("enhance", width).eval().to(memory_format=layout)
    x = torch.rand(batch, 1, *shape).contiguous(memory_format=layout)
    autocast = torch.autocast("cpu", dtype=chosen.dtype or torch.float32, enabled=chosen.dtype is not None)
    with torch.inference_mode(), autocast, float32_layers(net, chosen.fp32_part):
        net(x)
        start = time.perf_counter()
        for _ in range(repeats):
            net(x)
    tiles = batch * shape[0] * shape[1] * shape[2] / 40 ** 3
    return (time.perf_counter() - start) / repeats / tiles


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--precisions", nargs="+", default=["fp32"])
    parser.add_argument("--shape", type=int, nargs=3, default=[40, 40, 40])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    best = {}
    print(machine_line())
    print(f"{'width':>5} {'batch':>5} {'precision':>12} {'s/tile':>8}")
    for width in args.widths:
        for precision in args.precisions:
            for batch in args.batches:
                seconds = seconds_per_tile(width, batch, precision, tuple(args.shape),
                                           repeats=1 if width >= 64 else 2)
                print(f"{width:>5} {batch:>5} {precision:>12} {seconds:>8.3f}", flush=True)
                key = (width, precision)
                if seconds < best.get(key, (float("inf"), 0))[0]:
                    best[key] = (seconds, batch)
    print(" ".join(f"best_batch_w{w}_{p}={b} s_per_tile_w{w}_{p}={s:.3f}" for (w, p), (s, b) in best.items()))


if __name__ == "__main__":
    main()
