"""Quality and speed of an enhancement model on held-out images with fresh synthetic degradations.

For every held-out image (preprocessed exactly as for training and inference:
window, N4, 0.8/0.75 mm, histogram matching to its age template) and every
degradation kind of ``bmex_wf.training.degradations``, a region of the clean
volume is degraded with a seed never used in training, enhanced with the
whole-volume inference engine (``enhance_volume``, fast tiling) and compared with
the clean region inside the brain: PSNR (peak 1000, template range) and SSIM of
degraded-vs-clean and enhanced-vs-clean. The table lists each kind; a negative
gain means the model made that kind worse. ``seconds_per_image`` is the time of
one whole-brain enhancement (the largest held-out brain, CPU threads as given).

Usage::

    python benchmarks/eval_builtin.py [--model FILE] [--bids DIR --subject 0002 --subject 0009]
        [--cache-dir DIR] [--region 80] [--repeats 1] [--threads 2]

The last line is ``psnr_gain_db=<mean> ssim_gain=<mean> seconds_per_image=<...>``.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
#: Seeds far from the training streams (which use small integers).
EVAL_SEED = 20_261_125

LOGGER = logging.getLogger("eval_builtin")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path,
                        default=Path(str(resources.files("bmex_wf.data").joinpath("bmex-builtin-enhance.pt"))),
                        help="model file (default: the built-in model)")
    parser.add_argument("--bids", type=Path, default=SHARED / "test_BIDS", help="BIDS dataset")
    parser.add_argument("--subject", action="append", default=None,
                        help="held-out subject(s) (default: 0002 and 0009, never trained on)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/bmex-eval-cache"),
                        help="cache of preprocessed volumes")
    parser.add_argument("--region", type=int, default=80,
                        help="side of the central region degraded and enhanced per kind (0: whole volume)")
    parser.add_argument("--repeats", type=int, default=1, help="degradations per image and kind")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for inference")
    parser.add_argument("--no-timing", action="store_true", help="skip the whole-brain timing")
    return parser.parse_args(argv)


def central_region(shape, mask: np.ndarray, side: int) -> tuple[slice, ...]:
    """A cube of ``side`` voxels (clipped to the volume) centred on the brain's centre of mass."""
    if side <= 0:
        return tuple(slice(0, n) for n in shape)
    centre = np.round(np.argwhere(mask).mean(axis=0)).astype(int)
    starts = [int(np.clip(c - side // 2, 0, max(n - side, 0))) for c, n in zip(centre, shape)]
    return tuple(slice(s, min(s + side, n)) for s, n in zip(starts, shape))


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    logging.getLogger("bmex_wf").setLevel(logging.WARNING)
    opts = parse_args(argv)
    from bmex_wf.models import load_network
    from bmex_wf.models.inference import enhance_volume
    from bmex_wf.training.data import bids_sources, prepare_volume
    from bmex_wf.training.degradations import DEGRADATIONS, degrade
    from bmex_wf.training.loop import psnr, ssim

    network = load_network(opts.model, "enhance")
    LOGGER.info("model %s (width %d)", opts.model, network.width)
    subjects = opts.subject or ["0002", "0009"]
    volumes = [prepare_volume(s, opts.cache_dir) for s in bids_sources(opts.bids, subjects=subjects)]
    if not volumes:
        LOGGER.error("no held-out images found for subjects %s in %s", subjects, opts.bids)
        return 1

    rows = []
    for vol in volumes:
        clean_full, mask_full = np.asarray(vol.clean), np.asarray(vol.mask) > 0
        box = central_region(clean_full.shape, mask_full, opts.region)
        clean, mask = clean_full[box], mask_full[box]
        for number, kind in enumerate(DEGRADATIONS):
            for repeat in range(opts.repeats):
                seed = EVAL_SEED + 1000 * number + repeat
                degraded = degrade(clean, [kind], seed=seed, spacing_mm=vol.spacing_mm) * mask
                start = time.perf_counter()
                recon, _ = enhance_volume(degraded, network, mask=mask, device="cpu", precision="fp32",
                                          num_threads=opts.threads, progress=False)
                seconds = time.perf_counter() - start
                recon = recon * mask
                rows.append({"image": vol.name, "kind": kind, "seconds": seconds,
                             "psnr_in": psnr(degraded, clean, mask), "psnr_out": psnr(recon, clean, mask),
                             "ssim_in": ssim(degraded, clean, mask), "ssim_out": ssim(recon, clean, mask)})
                LOGGER.info("%s %-10s PSNR %.2f -> %.2f dB, SSIM %.4f -> %.4f (%.1f s)", vol.name, kind,
                            rows[-1]["psnr_in"], rows[-1]["psnr_out"], rows[-1]["ssim_in"],
                            rows[-1]["ssim_out"], seconds)

    print(f"{'kind':<11}{'n':>3}{'PSNR in':>10}{'PSNR out':>10}{'gain dB':>9}{'SSIM in':>9}{'SSIM out':>9}"
          f"{'gain':>8}  verdict")
    for kind in DEGRADATIONS:
        sel = [r for r in rows if r["kind"] == kind]
        mean = {k: float(np.mean([r[k] for r in sel])) for k in ("psnr_in", "psnr_out", "ssim_in", "ssim_out")}
        gain = mean["psnr_out"] - mean["psnr_in"]
        verdict = "better" if gain > 0 else "WORSE"
        print(f"{kind:<11}{len(sel):>3}{mean['psnr_in']:>10.2f}{mean['psnr_out']:>10.2f}{gain:>9.2f}"
              f"{mean['ssim_in']:>9.4f}{mean['ssim_out']:>9.4f}{mean['ssim_out'] - mean['ssim_in']:>8.4f}  {verdict}")

    seconds_per_image = float("nan")
    if not opts.no_timing:
        largest = max(volumes, key=lambda v: int(np.count_nonzero(v.mask)))
        data, mask = np.asarray(largest.clean), np.asarray(largest.mask) > 0
        start = time.perf_counter()
        enhance_volume(data, network, mask=mask, device="cpu", precision="fp32",
                       num_threads=opts.threads, progress=False)
        seconds_per_image = time.perf_counter() - start
        LOGGER.info("whole-brain enhancement of %s (%d brain voxels, %d threads): %.1f s", largest.name,
                    int(mask.sum()), opts.threads, seconds_per_image)
    psnr_gain = float(np.mean([r["psnr_out"] - r["psnr_in"] for r in rows]))
    ssim_gain = float(np.mean([r["ssim_out"] - r["ssim_in"] for r in rows]))
    print(f"psnr_gain_db={psnr_gain:.3f} ssim_gain={ssim_gain:.4f} seconds_per_image={seconds_per_image:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
