"""Winograd F(4x4x4, 3x3x3) against direct convolution for one full-resolution layer (trial).

Fewer multiplications per output voxel (3.4 instead of 27) is the one way left to cut the
network's arithmetic below what the tiles compute. This script times one layer of the
official-size network on one column tile both ways, in eager PyTorch on the CPU:

    python benchmarks/bench_winograd.py [--shape 48 48 128] [--channels 128 128] [--threads 2]

It prints the CPU, then one line per precision: seconds for the direct convolution
(oneDNN, channels-last, as the engine runs it) and for Winograd (input transform, batched
matrix products, output transform), each with its largest error relative to a float64
convolution.
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import partial

import torch
from torch.nn import functional as F

from bmex_wf.models.precision import machine_line

#: F(4, 3) transforms (Lavin & Gray 2016): input B^T, filter G, output A^T.
B_T = ((4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
       (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1))
G = ((1 / 4, 0, 0), (-1 / 6, -1 / 6, -1 / 6), (-1 / 6, 1 / 6, -1 / 6),
     (1 / 24, 1 / 12, 1 / 6), (1 / 24, -1 / 12, 1 / 6), (0, 0, 1))
A_T = ((1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0), (0, 1, -1, 8, -8, 1))
OUT, IN = 4, 6


def filter_transform(weight: torch.Tensor) -> torch.Tensor:
    """(K, C, 3, 3, 3) weights -> (216, C, K) transformed filters (W, H, D order of the 216)."""
    g = torch.tensor(G, dtype=torch.float64)
    u = torch.einsum("ai,bj,ck,oxijk->cbaxo", g, g, g, weight.double())
    return u.reshape(IN ** 3, weight.shape[1], weight.shape[0]).float()


def along(x: torch.Tensor, dim: int, matrix, stride: int) -> torch.Tensor:
    """Apply a 1-D transform to windows of ``IN`` voxels taken every ``stride`` along ``dim``.

    The result gains a leading axis (one entry per row of ``matrix``).
    """
    tiles = (x.shape[dim] - IN) // stride + 1
    every = (slice(None),) * dim + (slice(None, None, stride),)
    taps = [x.narrow(dim, i, stride * (tiles - 1) + 1)[every] for i in range(IN)]
    out = x.new_empty((len(matrix),) + taps[0].shape)
    for row, coefficients in enumerate(matrix):
        terms = [(c, tap) for c, tap in zip(coefficients, taps) if c]
        torch.mul(terms[0][1], terms[0][0], out=out[row])
        for c, tap in terms[1:]:
            out[row].add_(tap, alpha=c)
    return out


def winograd_conv(x: torch.Tensor, filters: torch.Tensor, bias: torch.Tensor, dtype) -> torch.Tensor:
    """3x3x3 convolution (padding 1) of ``x`` (N, C, D, H, W; sizes multiples of 4)."""
    n, c, d, h, w = x.shape
    padded = F.pad(x.permute(0, 2, 3, 4, 1), (0, 0, 1, 1, 1, 1, 1, 1))
    v = along(along(along(padded, 1, B_T, OUT), 3, B_T, OUT), 5, B_T, OUT)
    m = torch.bmm(v.reshape(IN ** 3, -1, c).to(dtype), filters.to(dtype)).float()
    m = m.reshape(IN, IN, IN, n, d // OUT, h // OUT, w // OUT, -1)
    y = along(along(along(m, 0, A_T, IN)[:, 0], 1, A_T, IN)[:, :, 0], 2, A_T, IN)[:, :, :, 0]
    y = y.permute(3, 4, 0, 5, 1, 6, 2, 7).reshape(n, d, h, w, -1) + bias
    return y.permute(0, 4, 1, 2, 3)


def direct_conv(conv: torch.nn.Conv3d, x: torch.Tensor, dtype) -> torch.Tensor:
    """The layer as the engine runs it (bf16 through autocast)."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
        return conv(x)


def timed(fn, repeats: int = 2) -> tuple[float, torch.Tensor]:
    fn()
    start = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    return (time.perf_counter() - start) / repeats, out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=int, nargs=3, default=(48, 48, 128), help="tile (D H W)")
    parser.add_argument("--channels", type=int, nargs=2, default=(128, 128), help="in, out")
    parser.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    torch.manual_seed(0)
    cin, cout = opts.channels
    conv = torch.nn.Conv3d(cin, cout, 3, padding=1).eval()
    x = torch.relu(torch.randn(1, cin, *opts.shape)).contiguous(memory_format=torch.channels_last_3d)
    sys.stdout.write(machine_line() + "\n")
    with torch.inference_mode():
        reference = F.conv3d(x.double(), conv.weight.double(), conv.bias.double(), padding=1)
        scale = reference.abs().max().item()
        filters, bias = filter_transform(conv.weight), conv.bias.detach()
        fast = conv.to(memory_format=torch.channels_last_3d)
        for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
            direct_s, direct_out = timed(partial(direct_conv, fast, x, dtype))
            wino_s, wino_out = timed(partial(winograd_conv, x, filters, bias, dtype))
            sys.stdout.write(
                f"precision={name} tile={'x'.join(map(str, opts.shape))} channels={cin}->{cout} "
                f"direct_s={direct_s:.3f} direct_rel_err={(direct_out.double() - reference).abs().max() / scale:.1e} "
                f"winograd_s={wino_s:.3f} winograd_rel_err={(wino_out.double() - reference).abs().max() / scale:.1e}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
