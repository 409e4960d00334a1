"""The demo's procedure on a test_BIDS scan instead of MNI152: a check that may select models.

``bmex-wf demo`` is judged on nilearn's MNI152, which must never choose a model. This script
repeats the demo's recipe on a scan of ``../shared/data/test_BIDS`` (default ``sub-0002``, the
23-month T1w that training holds out): resampled to 1 mm (linear),
scaled to 0..1000, degraded with the demo's kinds and seed (:data:`bmex_wf.cli.demo.DEMO_DEGRADATIONS`),
run through ``init_bmex_wf`` (default tiling and precision, the scan's non-zero voxels as a
precomputed mask), and ``enhanced_brain`` and the degraded input are scored against the clean
1 mm image inside that mask: fitted PSNR and SSIM (:mod:`bmex_wf.metrics`).

    python benchmarks/eval_demo_like.py [--subject 0002] [--model FILE ...] [--threads 2] [--clean-input]

First a line for a plain denoiser as a yardstick: the degraded image smoothed by a Gaussian
(``gaussian_sigma_mm=`` and its ``fitted_psnr_db=``, the best of 0.5-1.25 mm). Then one line per
model: ``model= subject= fitted_psnr_in_db= fitted_psnr_out_db= fitted_ssim_in=
fitted_ssim_out= edge_error_share=`` (the share of the fitted output's squared error that lies
in the mask's outer voxel layer), then the network's GM and WM labels on the degraded scan against
a 3-class Atropos segmentation of the clean scan (``gm_dice= wm_dice= gm_ml= wm_ml= ref_gm_ml=
ref_wm_ml=``, the demo's tissue check without MNI152); with ``--clean-input`` also
``fitted_psnr_clean_out_db=``, the model run on the clean scan itself (what its output style alone
costs against the scan).
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from eval_pair import run_workflow

from bmex_wf.cli.demo import DEMO_DEGRADATIONS
from bmex_wf.metrics import fit_affine, fitted_psnr, fitted_ssim
from bmex_wf.models.registry import builtin_model_path
from bmex_wf.reports.demo_scores import TISSUE_LABELS
from bmex_wf.reports.demo_scores import tissue_scores as demo_tissue_scores

BIDS = ROOT.parent / "shared" / "data" / "test_BIDS"
#: Age given to the workflow (months): any age from 21 months on selects the Month24 model and
#: template, as the demo's adult does.
AGE_MONTHS = 24

LOGGER = logging.getLogger("eval_demo_like")


def demo_like_images(scan: Path, work: Path, seed: int = 0) -> tuple[Path, Path, Path]:
    """Clean 1 mm image, its mask and its degraded copy (written under ``work``)."""
    from nibabel.processing import resample_to_output

    from bmex_wf.training.degradations import degrade

    img = resample_to_output(nib.load(scan), voxel_sizes=1.0, order=1)
    data = np.asarray(img.dataobj, dtype=np.float32)
    mask = data > 0
    data *= 1000.0 / float(data.max())
    degraded = degrade(data, DEMO_DEGRADATIONS, seed=seed, spacing_mm=1.0, renormalize=False)
    degraded = np.rint(np.clip(degraded, 0, 32767) * mask).astype(np.int16)
    paths = work / "clean.nii.gz", work / "mask.nii.gz", work / "degraded.nii.gz"
    nib.Nifti1Image(data, img.affine).to_filename(paths[0])
    nib.Nifti1Image(mask.astype(np.uint8), img.affine).to_filename(paths[1])
    out = nib.Nifti1Image(degraded, img.affine)
    out.set_qform(img.affine, code=1)
    out.set_sform(img.affine, code=1)
    out.to_filename(paths[2])
    return paths


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--subject", default="0002", help="test_BIDS subject with a ses-V01 T1w")
    parser.add_argument("--model", type=Path, action="append", default=[],
                        help="model file (repeatable; default: the built-in model)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--clean-input", action="store_true",
                        help="also run each model on the clean scan (its style's cost)")
    opts = parser.parse_args(argv)
    scan = BIDS / f"sub-{opts.subject}" / "ses-V01" / "anat" / f"sub-{opts.subject}_ses-V01_T1w.nii.gz"
    if not scan.is_file():
        LOGGER.error("%s: no such scan (../shared/data/test_BIDS)", scan)
        return 1
    models = opts.model or [builtin_model_path()]
    with tempfile.TemporaryDirectory() as tmp:
        clean_path, mask_path, degraded_path = demo_like_images(scan, Path(tmp))
        clean = np.asarray(nib.load(clean_path).dataobj, dtype=np.float32)
        mask = np.asarray(nib.load(mask_path).dataobj) > 0
        degraded = np.asarray(nib.load(degraded_path).dataobj, dtype=np.float32)
        before = fitted_psnr(degraded, clean, mask), fitted_ssim(degraded, clean, mask)
        sigma, smoothed = gaussian_yardstick(degraded, clean, mask)
        sys.stdout.write(f"gaussian_sigma_mm={sigma} fitted_psnr_db={smoothed:.2f}\n")
        reference = reference_tissues(clean_path, mask_path)
        for number, model in enumerate(models):
            enhanced, labels = run_model(model, degraded_path, mask_path, Path(tmp) / f"run{number}", opts.threads)
            line = (f"model={model} subject={opts.subject} fitted_psnr_in_db={before[0]:.2f} "
                    f"fitted_psnr_out_db={fitted_psnr(enhanced, clean, mask):.2f} fitted_ssim_in={before[1]:.4f} "
                    f"fitted_ssim_out={fitted_ssim(enhanced, clean, mask):.4f} "
                    f"edge_error_share={edge_error_share(enhanced, clean, mask):.3f} "
                    + tissue_scores(labels, reference))
            if opts.clean_input:
                restyled, _ = run_model(model, clean_path, mask_path, Path(tmp) / f"clean{number}", opts.threads)
                line += f" fitted_psnr_clean_out_db={fitted_psnr(restyled, clean, mask):.2f}"
            sys.stdout.write(line + "\n")
    return 0


def run_model(model: Path, image: Path, mask: Path, work: Path, threads: int) -> tuple[np.ndarray, np.ndarray]:
    """``enhanced_brain`` (float32) and ``dseg`` of ``init_bmex_wf`` for ``image``."""
    run = run_workflow(model, image, mask, work, threads, age_months=AGE_MONTHS)
    return (np.asarray(nib.load(run.enhanced_brain).dataobj, dtype=np.float32),
            np.asarray(nib.load(run.dseg).dataobj))


def reference_tissues(clean: Path, mask: Path) -> np.ndarray:
    """3-class Atropos labels (0 BG, 1 CSF, 2 GM, 3 WM) of the clean scan inside ``mask``."""
    from bmex_wf.postproc.volumes import atropos_dseg

    return np.asarray(atropos_dseg(nib.load(clean), nib.load(mask), contrast="T1w", age_group="Month24").dataobj)


def tissue_scores(labels: np.ndarray, reference: np.ndarray) -> str:
    """``gm_dice= wm_dice= gm_ml= wm_ml= ref_gm_ml= ref_wm_ml=`` of two 1 mm label maps (the demo's
    :func:`~bmex_wf.reports.demo_scores.tissue_scores`)."""
    scores = demo_tissue_scores(labels, {name: reference == value for name, value in TISSUE_LABELS.items()},
                                voxel_ml=0.001)
    tissues = [(name.lower(), scores[name]) for name in TISSUE_LABELS]
    return " ".join([f"{name}_dice={score['dice']:.3f}" for name, score in tissues]
                    + [f"{name}_ml={score['volume_ml']:.0f}" for name, score in tissues]
                    + [f"ref_{name}_ml={score['reference_volume_ml']:.0f}" for name, score in tissues])


def edge_error_share(output, clean, mask) -> float:
    """Share of the fitted output's squared error in the outer voxel layer of ``mask``."""
    from scipy.ndimage import binary_erosion

    squared = (fit_affine(output, clean, mask) - clean) ** 2
    edge = mask & ~binary_erosion(mask)
    return float(squared[edge].sum() / squared[mask].sum())


def gaussian_yardstick(degraded, clean, mask, sigmas_mm=(0.5, 0.75, 1.0, 1.25)) -> tuple[float, float]:
    """The best fitted PSNR of the degraded 1 mm image smoothed by a Gaussian, and its sigma."""
    from scipy.ndimage import gaussian_filter

    scores = {sigma: fitted_psnr(gaussian_filter(degraded, sigma), clean, mask) for sigma in sigmas_mm}
    best = max(scores, key=scores.get)
    return best, scores[best]


if __name__ == "__main__":
    sys.exit(main())
