"""How each step of the inference recipe moves the pair's input away from BME-X's output.

The training half of the release's 24-month pair (``../shared/data/bmex_pair``): after each
step of :mod:`bmex_wf.preproc.recipe` (window, N4 of the head, N4 of the brain, histogram
matching to ``Template-Month24-T1w``; the brain mask is the BME-X output's, on the input grid,
so no resampling) the input is compared with the BME-X output inside that mask: Pearson
correlation and the PSNR after the least-squares fit a·x+b to the output (peak 1000), the best
any intensity-linear model of that image can do. What the recipe loses here no network behind
it can win back where the loss is a smooth field wider than its tiles.

    python benchmarks/pair_recipe_steps.py [--shrink 4]

Last line: ``raw_corr= raw_fit_db= network_input_corr= network_input_fit_db= no_n4_corr=
no_n4_fit_db=``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bmex_wf.image.io import load_image
from bmex_wf.metrics import correlation, fit_affine, psnr
from bmex_wf.preproc import recipe
from bmex_wf.preproc.n4 import N4_SHRINK_FACTOR

PAIR = ROOT.parent / "shared" / "data" / "bmex_pair"
INPUT = "test_24m_half-train_T1w.nii.gz"
OUTPUT = "test_24m_half-train_desc-bmex_T1w.nii.gz"
TEMPLATE = "Template-Month24-T1w"

LOGGER = logging.getLogger("pair_recipe_steps")


def scores(img, target: np.ndarray, brain: np.ndarray) -> tuple[float, float]:
    """Correlation with ``target`` and the PSNR (peak 1000) of the least-squares fit to it."""
    data = np.asarray(img.dataobj, dtype=np.float32)
    return correlation(data, target, brain), psnr(fit_affine(data, target, brain), target, brain)


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shrink", type=int, default=N4_SHRINK_FACTOR,
                        help=f"N4 shrink factor (default {N4_SHRINK_FACTOR}, as in the workflow)")
    opts = parser.parse_args(argv)
    if not (PAIR / INPUT).is_file():
        LOGGER.error("%s: the BME-X pair is not there (../shared/data/bmex_pair)", PAIR)
        return 1
    target_img = recipe.reorient(load_image(PAIR / OUTPUT))
    target = np.asarray(target_img.dataobj, dtype=np.float32)
    brain = target > 0
    raw = recipe.reorient(load_image(PAIR / INPUT))
    head = recipe.window(raw)
    head_n4 = recipe.correct_bias(head, shrink_factor=opts.shrink)
    brain_n4 = recipe.correct_bias(recipe.apply_mask(head_n4, brain), mask=brain, shrink_factor=opts.shrink)
    steps = {
        "raw": raw,
        "window": head,
        "n4_head": head_n4,
        "n4_brain": brain_n4,
        "network_input": recipe.match_template(brain_n4, TEMPLATE)[0],
        "no_n4": recipe.match_template(recipe.apply_mask(head, brain), TEMPLATE)[0],
    }
    results = {name: scores(img, target, brain) for name, img in steps.items()}
    for name, (corr, fit) in results.items():
        LOGGER.info("%-14s correlation %.4f  fitted PSNR %.2f dB", name, corr, fit)
    keys = ("raw", "network_input", "no_n4")
    sys.stdout.write(" ".join(f"{k}_corr={results[k][0]:.4f} {k}_fit_db={results[k][1]:.2f}" for k in keys)
                     + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
