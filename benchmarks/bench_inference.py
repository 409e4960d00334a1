"""Benchmark whole-volume enhancement: the release's patch scheme vs the fast scheme.

One process, one machine; network E with fixture-rule weights (or ``--model``), one real
brain (``sub-0002`` from ``../shared/data/test_BIDS``, reoriented to LPS, network order,
histogram matched to the 24-month template; or the same brain from a ``.npz`` written by
``make_bench_data.py``, which is what a GPU machine without ``../shared`` reads). Run from
the repository root::

    nice -n 5 python benchmarks/bench_inference.py            # full, official-size network
    python benchmarks/bench_inference.py --quick               # width-8 smoke run
    python benchmarks/bench_inference.py --tiles-only          # tile counts, work ratio; no network
    python benchmarks/bench_inference.py --precision-only      # built-in model: bf16 vs fp32
    python benchmarks/bench_inference.py --device cuda         # GPU: batched tiles, bf16/fp16

* ``fast_s``: wall time of one whole-brain ``run_enhancement`` call (tile placement, the
  network, stitching and the copy back included). On CUDA the brain is run twice and
  ``seconds_per_brain`` is the second (warm) run.
* ``upstream_s``: the release's loop (one 40³ patch per forward pass, float32, default
  layout), timed on the patches over the fidelity regions after one warm-up patch, times its
  patch count for this brain.
* Fidelity: exact maps on three regions (brain centre, cortical edge, and a seam of the fast
  scheme's tiles where several kept cores meet; ``--region`` voxels wide), computed from every
  tile or patch whose kept core meets them; recon PSNR (peak = the release's maximum there)
  and label agreement over brain voxels, pooled over the regions on the last line, per region
  in the table. ``release_self_*``: the release with
  its grid started 9 voxels earlier against the release. ``--fidelity GEOMETRY ...`` adds
  other tile sizes and margins (e.g. ``cubes-48-m4-d2``).
* ``trained_*``: the same fidelity figures for the trained built-in model;
  ``bf16_vs_fp32_psnr_db``: the built-in model in bf16 (forced) against float32 on the
  default tiles over the regions (``bf16_tail32_vs_fp32_psnr_db``: with the recon trunk's
  last layers in float32; ``bf16_recon32_vs_fp32_psnr_db``: with the connection and the whole
  recon trunk in float32).
* ``work_ratio``: voxels the fast scheme computes ÷ brain voxels; ``uncovered_brain_voxels``
  must be 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_regions import agreement, engine_maps, regions, release_maps, warm_up

from bmex_wf.models.checkpoints import load_network
from bmex_wf.models.geometry import PLACEMENTS, TileSpec, default_geometry, parse_geometry
from bmex_wf.models.inference import (
    network_precision,
    resolve_device,
    resolve_precision,
    run_enhancement,
)
from bmex_wf.models.networks import build_network
from bmex_wf.models.placement import fit_grid
from bmex_wf.models.precision import machine_line
from bmex_wf.models.registry import builtin_model_path
from bmex_wf.models.stitching import UPSTREAM_COUNTER_START
from bmex_wf.models.tiling import upstream_grid
from bmex_wf.testing.rule_weights import apply_rule_weights

LOGGER = logging.getLogger("bench_inference")
SHARED = ROOT.parent / "shared" / "data"
BENCH_DATA = ROOT / "benchmarks" / "data" / "sub-0002_preproc.npz"
#: Tile sizes and margins of the ``--tiles-only`` table.
TILE_SIZES, MARGINS = (32, 40, 48, 56, 64), (3, 4, 5, 6)
#: Reduced precisions measured against float32 (bmex_wf.models.precision).
LOW_PRECISIONS = ("bf16", "bf16-tail32", "bf16-recon32")
#: Voxels the release's grid is shifted by for its self-agreement.
SELF_SHIFT = 9


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="reduced run: width-8 network, 12³ regions, no other precision")
    parser.add_argument("--tiles-only", action="store_true",
                        help="tile counts and work ratio per placement, tile size and margin; no network")
    parser.add_argument("--precision-only", action="store_true",
                        help="only the bf16-vs-fp32 figures of --model (default: the built-in model), "
                             "with the record for bmex_wf/data/precision.json")
    parser.add_argument("--compile-check", action="store_true",
                        help="only measure torch.compile: compile time and seconds per tile")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--input", type=Path, default=None,
                        help="preprocessed brain (.npz of make_bench_data.py) instead of test_BIDS "
                             "(default on CUDA: benchmarks/data/sub-0002_preproc.npz)")
    parser.add_argument("--subject", default="sub-0002", help="test_BIDS subject (24 months)")
    parser.add_argument("--template", default="Template-Month24-T1w", help="age template")
    parser.add_argument("--width", type=int, default=None, help="network width (default 64)")
    parser.add_argument("--model", type=Path, default=None,
                        help="trained network E file instead of fixture-rule weights (its width "
                             "is read from the file; 'builtin' = the shipped model; 'rule' = "
                             "fixture-rule weights, the default except for --precision-only, "
                             "which measures the built-in model unless told otherwise)")
    parser.add_argument("--geometry", default=None,
                        help="tile geometry of the fast scheme (default: the device kind's)")
    parser.add_argument("--precision", default=None,
                        help="precision of the fast run (default: auto on CPU, bf16 or fp16 on CUDA)")
    parser.add_argument("--fidelity", nargs="*", default=[], metavar="GEOMETRY",
                        help="also measure the fidelity of these geometries on the regions")
    parser.add_argument("--crop", type=int, default=0, help="crop the brain to this cube")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--region", type=int, default=None, help="edge of the fidelity regions (24)")
    parser.add_argument("--skip-trained", action="store_true", help="skip the built-in model's figures")
    parser.add_argument("--skip-other-precision", action="store_true",
                        help="skip timing the fast scheme's centre tiles in the other precision")
    args = parser.parse_args(argv)
    if args.width is None:
        args.width = 8 if args.quick else 64
    if args.region is None:
        args.region = 12 if args.quick else 24
    args.skip_other_precision = args.skip_other_precision or args.quick
    return args


def load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Brain and mask from ``make_bench_data.py``'s file, zero-padded back to the full shape."""
    with np.load(path) as data:
        shape, offset = tuple(int(n) for n in data["shape"]), data["offset"].astype(int)
        crop = data["volume"].astype(np.float32)
        mask_crop = np.unpackbits(data["mask"], count=crop.size).reshape(crop.shape).astype(bool)
    box = tuple(slice(int(o), int(o) + n) for o, n in zip(offset, crop.shape))
    vol, mask = np.zeros(shape, np.float32), np.zeros(shape, bool)
    vol[box], mask[box] = crop, mask_crop
    return vol, mask


def load_bids(subject: str, template: str) -> tuple[np.ndarray, np.ndarray]:
    """Brain in network order and template units, and its mask (non-zero voxels)."""
    import nibabel as nib

    from bmex_wf.image.orientation import reorient_to_lps, to_network_order
    from bmex_wf.preproc.intensity import match_histogram, template_landmarks

    anat = SHARED / "test_BIDS" / subject
    path = next(anat.rglob(f"{subject}*_T1w.nii.gz"))
    img = reorient_to_lps(nib.load(path))
    data = to_network_order(np.asarray(img.dataobj, dtype=np.float32))
    mask = data > 0
    vol = np.where(mask, match_histogram(data, template_landmarks(template)), 0).astype(np.float32)
    LOGGER.info("%s: %s voxels, %d brain voxels", path.name, vol.shape, mask.sum())
    return vol, mask


def load_input(args) -> tuple[np.ndarray, np.ndarray]:
    path = args.input or (BENCH_DATA if args.device.startswith("cuda") else None)
    vol, mask = load_npz(path) if path else load_bids(args.subject, args.template)
    if args.crop:
        box = tuple(slice(max(c - args.crop // 2, 0), max(c - args.crop // 2, 0) + args.crop)
                    for c in np.array(np.nonzero(mask)).mean(axis=1).astype(int))
        vol, mask = np.ascontiguousarray(vol[box]), mask[box]
    return vol, mask


def load_model(path) -> torch.nn.Module:
    """Network E from a file (``builtin``: the shipped model)."""
    return load_network(builtin_model_path() if str(path) == "builtin" else path, "enhance")


def benchmark_network(args) -> torch.nn.Module:
    """Network E: fixture-rule weights at ``--width``, or the trained file ``--model``."""
    if args.model is None or str(args.model) == "rule":
        return apply_rule_weights(build_network("enhance", args.width))
    net = load_model(args.model)
    args.width = net.width
    return net


def tiles_table(mask: np.ndarray, vol: np.ndarray) -> None:
    """Print tile counts and work per placement, tile size and margin (no network)."""
    release = upstream_grid(vol).summary(mask)
    print(f"# tile geometry over {int(mask.sum())} brain voxels (mask dilated by 2); "
          f"release: {release['tiles']} patches, work_ratio {release['work_ratio']:.2f}")
    print(f"{'geometry':22s} {'tiles':>6s} {'voxels':>11s} {'work_ratio':>10s} {'uncovered':>9s}")
    for placement in PLACEMENTS:
        for tile in TILE_SIZES:
            for margin in MARGINS:
                summary = fit_grid(mask, TileSpec(placement, tile, margin)).summary(mask)
                print(f"{TileSpec(placement, tile, margin).name:22s} {summary['tiles']:6d} "
                      f"{summary['voxels_computed']:11d} {summary['work_ratio']:10.2f} "
                      f"{summary['uncovered_brain_voxels']:9d}")
    fields = []
    for kind in ("cpu", "gpu"):
        spec = default_geometry(kind)
        summary = fit_grid(mask, spec).summary(mask)
        fields += [f"{kind}_geometry={spec.name}", f"{kind}_tiles={summary['tiles']}",
                   f"{kind}_work_ratio={summary['work_ratio']:.3f}",
                   f"{kind}_uncovered_brain_voxels={summary['uncovered_brain_voxels']}"]
    lattice = fit_grid(mask, TileSpec("lattice", 40, 5)).summary(mask)
    print(" ".join(fields + [f"lattice_work_ratio={lattice['work_ratio']:.3f}",
                             f"release_work_ratio={release['work_ratio']:.3f}"]))


def flops_per_voxel(net) -> float:
    """FLOPs of a forward pass per input voxel (counted on 8³; they grow with voxels)."""
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        net.cpu()(torch.zeros(1, 1, 8, 8, 8))
    return float(counter.get_total_flops()) / 8 ** 3


def compile_check(args, net, precision, n_voxels: int) -> None:
    """Print whether ``torch.compile`` pays for its compile time on one brain."""
    x = torch.rand(1, 1, 40, 40, 40).mul(1000).contiguous(memory_format=torch.channels_last_3d)
    net = net.to(memory_format=torch.channels_last_3d)

    def best(model, first=None):
        autocast = torch.autocast("cpu", dtype=precision.dtype or torch.float32,
                                  enabled=precision.dtype is not None)
        times = []
        with torch.inference_mode(), autocast:
            for _ in range(3):
                t0 = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - t0)
        if first is not None:
            first.append(times[0])
        return min(times[1:])

    eager = best(net)
    warmup: list = []
    compiled = best(torch.compile(net, dynamic=False), warmup)
    compile_s = warmup[0] - compiled
    saved = n_voxels / 40 ** 3 * (eager - compiled)
    print(f"# torch.compile, network E width {args.width}, {precision.name}, {args.threads} threads")
    print(f"eager {eager:.2f} s/40³, compiled {compiled:.2f} s/40³, compile time {compile_s:.1f} s, "
          f"saved per brain {saved:.1f} s -> {'pays off' if saved > compile_s else 'does not pay off'}")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 ** 2


class Fidelity:
    """Maps of one network on the fidelity regions: release, shifted release, tile schemes."""

    def __init__(self, net, vol, mask, boxes, device):
        self.net, self.vol, self.mask, self.boxes, self.device = net, vol, mask, boxes, device
        self.grid_up = upstream_grid(vol)
        self.ref: dict = {}
        self.release_times: list[float] = []

    def release(self, timed: bool) -> None:
        """The release's maps on every region (its loop; the first patch is a warm-up)."""
        if timed:
            warm_up(self.net, self.grid_up.tile, self.device)
        for name, box in self.boxes.items():
            if timed:
                self.ref[name], times = release_maps(self.net, self.vol, self.grid_up, box,
                                                     UPSTREAM_COUNTER_START, self.device)
                self.release_times += times
            else:
                self.ref[name] = engine_maps(self.net, self.vol, self.grid_up, box, None,
                                             device=self.device, counter_start=UPSTREAM_COUNTER_START)[0]

    def scheme(self, grid, precision, counter_start: float = 0.0) -> dict:
        """Maps of ``grid`` on every region in ``precision``."""
        return {name: engine_maps(self.net, self.vol, grid, box, precision, device=self.device,
                                  counter_start=counter_start)[0] for name, box in self.boxes.items()}

    def shifted(self) -> dict:
        return self.scheme(upstream_grid(self.vol, shift=SELF_SHIFT), None, UPSTREAM_COUNTER_START)

    def versus(self, maps: dict, reference: dict | None = None) -> dict:
        """Agreement of ``maps`` with the release (or ``reference``) per region and pooled."""
        reference = reference or self.ref
        pairs = {n: (reference[n], maps[n], self.mask[b]) for n, b in self.boxes.items()}
        out = {n: agreement([p]) for n, p in pairs.items()}
        out["pooled"] = agreement(list(pairs.values()))
        return out


def trained_figures(vol, mask, boxes, device, geometry, release: bool = True, net=None,
                    name: str = "built-in network E (width 8)",
                    command: str = "python benchmarks/bench_inference.py --precision-only") -> dict:
    """Fidelity of ``net`` (default: the built-in model) to the release (unless not ``release``),
    and its bf16-vs-fp32 agreement with the record for ``precision.json``."""
    net = load_model("builtin") if net is None else net
    fid = Fidelity(net, vol, mask, boxes, device)
    grid = fit_grid(mask, geometry)
    fast = fid.scheme(grid, resolve_precision("fp32", device))
    out = {}
    if release:
        fid.release(timed=False)
        out = {"fast": fid.versus(fast), "self": fid.versus(fid.shifted())}
    out["record"] = {"name": name}
    for low in LOW_PRECISIONS:
        out[low] = fid.versus(fid.scheme(grid, resolve_precision(low, device)), fast)
        out["record"][f"{low.replace('-', '_')}_psnr_db"] = round(out[low]["pooled"][0], 2)
    out["record"]["bf16_label_agreement"] = round(out["bf16"]["pooled"][1], 4)
    out["record"]["command"] = command
    return out


def fast_precision(args, device) -> str:
    """Precision of the fast run: ``--precision``, else auto on CPU, bf16 or fp16 on CUDA."""
    if args.precision:
        return args.precision
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "auto"


def main(argv=None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = resolve_device(args.device)
    if device.type == "cuda":  # float32 references (release, shifted release) without TF32
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    vol, mask = load_input(args)
    geometry = parse_geometry(args.geometry) if args.geometry else default_geometry(device.type)
    boxes = regions(mask, args.region, fit_grid(mask, geometry))
    if args.tiles_only:
        tiles_table(mask, vol)
        return 0
    if args.precision_only:
        args.model = args.model or "builtin"
        net = benchmark_network(args)
        model = str(args.model)
        label = {"rule": "fixture-rule", "builtin": "built-in"}.get(model, Path(model).name)
        name = f"{label} network E (width {args.width})"
        command = "python benchmarks/bench_inference.py --precision-only" + (
            "" if model == "builtin" else f" --model {model}")
        out = trained_figures(vol, mask, boxes, device, geometry, release=False, net=net, name=name,
                              command=command)
        for precision_name in LOW_PRECISIONS:
            values = out[precision_name]
            parts = ", ".join(f"{k} {values[k][0]:.2f} dB" for k in boxes)
            print(f"{precision_name} vs fp32: {values['pooled'][0]:.2f} dB, labels {values['pooled'][1]:.4f} ({parts})")
        print(json.dumps({net.weights_sha256: out["record"]}, indent=2))
        print(" ".join(f"{n.replace('-', '_')}_vs_fp32_psnr_db={out[n]['pooled'][0]:.2f}" for n in LOW_PRECISIONS)
              + f" bf16_label_agreement={out['bf16']['pooled'][1]:.4f}")
        return 0
    net = benchmark_network(args)
    precision = network_precision(net, fast_precision(args, device), device)
    if args.compile_check:
        compile_check(args, net, precision, fit_grid(mask, geometry).voxels())
        return 0
    flops = flops_per_voxel(net)

    fid = Fidelity(net, vol, mask, boxes, device)
    fid.release(timed=True)
    per_patch = float(np.mean(fid.release_times))
    upstream_s = per_patch * len(fid.grid_up)
    LOGGER.info("release: %.2f s per patch, %d patches -> %.0f s", per_patch, len(fid.grid_up), upstream_s)

    runs = 2 if device.type == "cuda" else 1
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = run_enhancement(vol, net, mask=mask, geometry=geometry, device=device,
                                 precision=precision.name, num_threads=args.threads,
                                 progress=not args.quick)
        walls.append(time.perf_counter() - t0)
    fast_s, report = walls[0], result.report
    rss_fast = peak_rss_gb()
    maps = np.concatenate([result.recon[None], result.scores])
    del result
    fast = {n: maps[(slice(None), *b)] for n, b in boxes.items()}
    del maps
    rows = [("release scheme (timed, extrapolated)", "fp32", len(fid.grid_up), upstream_s),
            (f"fast scheme {geometry.name}, whole brain", report["precision"], report["tiles"], fast_s)]
    fidelity = [("fast vs release", fid.versus(fast)), ("release shifted 9 vs release", fid.versus(fid.shifted()))]
    for name in args.fidelity:
        fidelity.append((f"{name} vs release", fid.versus(fid.scheme(fit_grid(mask, parse_geometry(name)),
                                                                     precision))))
    other_s = float("nan")
    if not args.skip_other_precision:
        other = resolve_precision("fp32" if precision.dtype is not None else "bf16", device)
        lowp, seconds, voxels = engine_maps(net, vol, fit_grid(mask, geometry), boxes["centre"], other,
                                            device=device)
        other_s = seconds / voxels * report["voxels_computed"]
        rows.append((f"fast scheme in {other.name} (centre tiles timed, per voxel extrapolated)",
                     other.name, report["tiles"], other_s))
        pair = agreement([(fast["centre"], lowp, mask[boxes["centre"]])])
        fidelity.append((f"{other.name} vs {precision.name} (centre region)",
                         {k: pair if k in ("centre", "pooled") else (float("nan"),) * 2
                          for k in (*boxes, "pooled")}))
    trained = None if args.skip_trained else trained_figures(vol, mask, boxes, device, geometry)
    report_table(args, vol, device, rows, fidelity, flops, report, fast_s, per_patch, rss_fast, trained,
                 (*boxes, "pooled"))
    print(last_line(fid, fast, fidelity, report, fast_s, upstream_s, walls, trained, other_s, device))
    return 0


def report_table(args, vol, device, rows, fidelity, flops, report, fast_s, per_patch, rss_fast, trained,
                 columns):
    """Print the result table."""
    cpu = torch.backends.cpu.get_cpu_capability()
    weights = "fixture-rule weights" if args.model is None else f"weights {args.model}"
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU capability {cpu}"
    print(f"# network E width {args.width}, {weights}; image {args.subject} {vol.shape}; "
          f"{args.threads} threads; {where}; torch {torch.__version__}")
    if device.type != "cuda":
        print(machine_line())
    print(f"{'run':62s} {'prec':11s} {'tiles':>6s} {'seconds':>10s}")
    for name, prec, count, seconds in rows:
        print(f"{name:62s} {prec:11s} {count:6d} {seconds:10.1f}")
    print(f"{'fidelity (recon PSNR dB / label agreement over brain voxels)':62s} "
          + " ".join(f"{k:>14s}" for k in columns))
    for name, values in fidelity:
        cells = " ".join(f"{values[k][0]:7.2f} {values[k][1]:.4f}" for k in columns)
        print(f"{name:62s} {cells}")
    if trained:
        for key, label in (("fast", "built-in: fast vs release"), ("self", "built-in: release shifted 9 vs release"),
                           ("bf16", "built-in: bf16 vs fp32 (default tiles)"),
                           ("bf16-tail32", "built-in: bf16, recon tail in fp32, vs fp32"),
                           ("bf16-recon32", "built-in: bf16, recon side in fp32, vs fp32")):
            cells = " ".join(f"{trained[key][k][0]:7.2f} {trained[key][k][1]:.4f}" for k in columns)
            print(f"{label:62s} {cells}")
    voxels = report["voxels_computed"]
    print(f"geometry {report['geometry']}: {report['tiles']} tiles, {voxels} voxels computed, work ratio "
          f"{report['work_ratio']:.2f}, uncovered brain voxels {report['uncovered_brain_voxels']}")
    print(f"GFLOP per 40³ patch: {flops * 40 ** 3 / 1e9:.1f}; fast run {voxels * flops / 1e9 / fast_s:.1f} "
          f"GFLOP/s; release loop {flops * 40 ** 3 / 1e9 / per_patch:.1f} GFLOP/s")
    print(f"peak RSS after the fast run: {rss_fast:.2f} GB")


def last_line(fid, fast, fidelity, report, fast_s, upstream_s, walls, trained, other_s, device) -> str:
    """The benchmark's last line (``key=value`` fields)."""
    psnr_db, labels = fidelity[0][1]["pooled"]
    self_psnr, self_labels = fidelity[1][1]["pooled"]
    nan = float("nan")
    t = trained or {}
    get = (lambda key, i: t[key]["pooled"][i]) if t else (lambda key, i: nan)
    fields = [
        f"speedup={upstream_s / fast_s:.2f}", f"fast_s={fast_s:.1f}", f"upstream_s={upstream_s:.1f}",
        f"psnr_db={psnr_db:.2f}", f"label_agreement={labels:.4f}", f"peak_rss_gb={peak_rss_gb():.2f}",
        f"release_self_psnr_db={self_psnr:.2f}", f"release_self_label_agreement={self_labels:.4f}",
        f"precision={report['precision']}",
        f"trained_psnr_db={get('fast', 0):.2f}", f"trained_label_agreement={get('fast', 1):.4f}",
        f"trained_release_self_psnr_db={get('self', 0):.2f}",
        f"trained_release_self_label_agreement={get('self', 1):.4f}",
        f"bf16_vs_fp32_psnr_db={get('bf16', 0):.2f}",
        f"bf16_tail32_vs_fp32_psnr_db={get('bf16-tail32', 0):.2f}",
        f"bf16_recon32_vs_fp32_psnr_db={get('bf16-recon32', 0):.2f}",
        f"uncovered_brain_voxels={report['uncovered_brain_voxels']}",
        f"work_ratio={report['work_ratio']:.3f}", f"other_precision_s={other_s:.1f}",
    ]
    if device.type == "cuda":
        fields += [f"device={device.type}", f"seconds_per_brain={walls[-1]:.2f}"]
    return " ".join(fields)


if __name__ == "__main__":
    sys.exit(main())
