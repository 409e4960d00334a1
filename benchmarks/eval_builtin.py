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

The real BME-X pair (``bmex_pair``: the release's input and the BME-X output for it) is
preprocessed as training reads it (a TSV row as ``scripts/train_builtin.sh`` writes it),
and only its validation slab (the one training holds out, :data:`PAIR_SLAB`) is enhanced:
PSNR (peak 1000) and Pearson correlation to the BME-X output inside the mask, of the input
and of the model's output. ``--demo-scores`` adds the figures of a ``bmex-wf demo`` run
(``demo_scores.json``) to the table.

Usage::

    python benchmarks/eval_builtin.py [--model FILE] [--bids DIR --subject 0002 --subject 0009]
        [--cache-dir DIR] [--region 80] [--repeats 1] [--threads 2] [--pair DIR | --no-pair]
        [--demo-scores FILE]

The last line is ``psnr_gain_db=<mean> ssim_gain=<mean> seconds_per_image=<...>
pair_psnr_in_db=<...> pair_psnr_out_db=<...> pair_corr_in=<...> pair_corr_out=<...>``
(``nan`` for the pair without ``bmex_pair``).
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
#: The pair's validation slab (network axis, fractions of the brain's extent), as in
#: ``--val-slab 2:0.38:0.65`` of scripts/train_builtin.sh.
PAIR_SLAB = (2, 0.38, 0.65)
#: The pair's files in ``--pair`` and the template they are matched to (scripts/train_builtin.sh).
PAIR_IMAGE, PAIR_TARGET = "test_24m_half-train_T1w.nii.gz", "test_24m_half-train_desc-bmex_T1w.nii.gz"
PAIR_TEMPLATE, PAIR_WEIGHT = "Template-Month24-T1w", 9

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
    parser.add_argument("--pair", type=Path, default=SHARED / "bmex_pair",
                        help="folder of the real BME-X pair half (default: ../shared/data/bmex_pair)")
    parser.add_argument("--no-pair", action="store_true", help="skip the real-pair evaluation")
    parser.add_argument("--demo-scores", type=Path, metavar="FILE",
                        help="demo_scores.json of a bmex-wf demo run, added to the table")
    return parser.parse_args(argv)


def central_region(shape, mask: np.ndarray, side: int) -> tuple[slice, ...]:
    """A cube of ``side`` voxels (clipped to the volume) centred on the brain's centre of mass."""
    if side <= 0:
        return tuple(slice(0, n) for n in shape)
    centre = np.round(np.argwhere(mask).mean(axis=0)).astype(int)
    starts = [int(np.clip(c - side // 2, 0, max(n - side, 0))) for c, n in zip(centre, shape)]
    return tuple(slice(s, min(s + side, n)) for s, n in zip(starts, shape))


def pair_source(pair_dir: Path, folder: Path):
    """The pair as a training source, from a TSV row written as scripts/train_builtin.sh writes it."""
    from bmex_wf.training.data import list_sources

    folder.mkdir(parents=True, exist_ok=True)
    tsv = folder / "pair.tsv"
    tsv.write_text(f"image\ttemplate\ttarget\tweight\n{(pair_dir / PAIR_IMAGE).absolute()}\t{PAIR_TEMPLATE}"
                   f"\t{(pair_dir / PAIR_TARGET).absolute()}\t{PAIR_WEIGHT}\n")
    (source,) = list_sources(tsv)
    return source


def pair_scores(volume, network, threads: int) -> dict:
    """PSNR (peak 1000) and correlation to the BME-X output on the held-out slab, before and after."""
    from bmex_wf.metrics import correlation, psnr
    from bmex_wf.models.inference import enhance_volume
    from bmex_wf.training.data import split_slab

    _, held = split_slab(volume, *PAIR_SLAB)
    mask = np.asarray(held.mask) > 0
    degraded, target = np.asarray(held.degraded, np.float32), np.asarray(held.clean, np.float32)
    recon, _ = enhance_volume(degraded, network, mask=mask, device="cpu", precision="fp32",
                              num_threads=threads, progress=False)
    recon = recon * mask
    scores = {"psnr_in": psnr(degraded, target, mask), "psnr_out": psnr(recon, target, mask),
              "corr_in": correlation(degraded, target, mask), "corr_out": correlation(recon, target, mask)}
    LOGGER.info("%s: slab %s held out (%s voxels, %d in the brain): PSNR %.2f -> %.2f dB, "
                "correlation %.4f -> %.4f", volume.name, PAIR_SLAB, held.clean.shape, int(mask.sum()),
                scores["psnr_in"], scores["psnr_out"], scores["corr_in"], scores["corr_out"])
    return scores


def table_header(second: str = "SSIM") -> str:
    """Header of a table row (:func:`table_row`); ``second`` names the second measure."""
    return (f"{'kind':<11}{'n':>3}{'PSNR in':>10}{'PSNR out':>10}{'gain dB':>9}{second + ' in':>9}"
            f"{second + ' out':>9}{'gain':>8}  verdict")


def table_row(name: str, n: int, psnr_in: float, psnr_out: float, second_in: float,
              second_out: float) -> str:
    """One row: PSNR in/out, the second measure in/out, their gains and a verdict by PSNR."""
    gain = psnr_out - psnr_in
    return (f"{name:<11}{n:>3}{psnr_in:>10.2f}{psnr_out:>10.2f}{gain:>9.2f}{second_in:>9.4f}"
            f"{second_out:>9.4f}{second_out - second_in:>8.4f}  {'better' if gain > 0 else 'WORSE'}")


def print_demo_scores(path: Path) -> None:
    """The figures of a demo run's ``demo_scores.json``: fitted PSNR/SSIM row, tissues line."""
    import json

    from bmex_wf.reports.demo_scores import tissues_text

    scores = json.loads(path.read_text())
    print(f"demo ({path}): fitted PSNR/SSIM against the clean MNI152")
    print(table_header())
    print(table_row("demo", 1, scores["input"]["fitted_psnr_db"], scores["enhanced"]["fitted_psnr_db"],
                    scores["input"]["fitted_ssim"], scores["enhanced"]["fitted_ssim"]))
    print(tissues_text(scores))


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    logging.getLogger("bmex_wf").setLevel(logging.WARNING)
    opts = parse_args(argv)
    from bmex_wf.metrics import psnr, ssim
    from bmex_wf.models import load_network
    from bmex_wf.models.inference import enhance_volume
    from bmex_wf.training.data import bids_sources, prepare_volume
    from bmex_wf.training.degradations import DEGRADATIONS, degrade

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

    pair = {key: float("nan") for key in ("psnr_in", "psnr_out", "corr_in", "corr_out")}
    if not opts.no_pair:
        pair = pair_scores(prepare_volume(pair_source(opts.pair, opts.cache_dir), opts.cache_dir), network,
                           opts.threads)

    from bmex_wf.models.precision import machine_line

    print(machine_line())
    print(table_header())
    for kind in DEGRADATIONS:
        sel = [r for r in rows if r["kind"] == kind]
        mean = {k: float(np.mean([r[k] for r in sel])) for k in ("psnr_in", "psnr_out", "ssim_in", "ssim_out")}
        print(table_row(kind, len(sel), mean["psnr_in"], mean["psnr_out"], mean["ssim_in"], mean["ssim_out"]))
    if not opts.no_pair:
        print(f"real pair: held-out slab {PAIR_SLAB} of {opts.pair.name}, against the BME-X output")
        print(table_header("corr"))
        print(table_row("bmex-pair", 1, pair["psnr_in"], pair["psnr_out"], pair["corr_in"], pair["corr_out"]))
    if opts.demo_scores:
        print_demo_scores(opts.demo_scores)

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
    print(f"psnr_gain_db={psnr_gain:.3f} ssim_gain={ssim_gain:.4f} seconds_per_image={seconds_per_image:.1f} "
          f"pair_psnr_in_db={pair['psnr_in']:.3f} pair_psnr_out_db={pair['psnr_out']:.3f} "
          f"pair_corr_in={pair['corr_in']:.4f} pair_corr_out={pair['corr_out']:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
