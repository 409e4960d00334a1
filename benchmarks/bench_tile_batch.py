"""Seconds per 40³ tile of network E on this CPU, by network width and tiles per pass.

Usage: ``python benchmarks/bench_tile_batch.py [--widths 8 16 64] [--batches 1 2 4]``.
Prints one row per width and batch size (float32, channels-last, as ``enhance_volume`` runs
on CPU) and, as the last line, the fastest batch size per width.
"""

from __future__ import annotations

import argparse
import time

import torch

from bmex_wf.models.networks import build_network


def seconds_per_tile(width: int, batch: int, tile: int = 40, repeats: int = 2) -> float:
    """Mean wall time per tile of ``repeats`` forward passes of ``batch`` tiles (after one warm-up)."""
    layout = torch.channels_last_3d
    net = build_network("enhance", width).eval().to(memory_format=layout)
    x = torch.rand(batch, 1, tile, tile, tile).contiguous(memory_format=layout)
    with torch.inference_mode():
        net(x)
        start = time.perf_counter()
        for _ in range(repeats):
            net(x)
    return (time.perf_counter() - start) / repeats / batch


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 16, 64])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    best = {}
    print(f"{'width':>5} {'batch':>5} {'s/tile':>8}")
    for width in args.widths:
        for batch in args.batches:
            seconds = seconds_per_tile(width, batch, repeats=1 if width >= 64 else 2)
            print(f"{width:>5} {batch:>5} {seconds:>8.3f}", flush=True)
            if seconds < best.get(width, (float("inf"), 0))[0]:
                best[width] = (seconds, batch)
    print(" ".join(f"best_batch_w{w}={b} s_per_tile_w{w}={s:.3f}" for w, (s, b) in best.items()))


if __name__ == "__main__":
    main()
