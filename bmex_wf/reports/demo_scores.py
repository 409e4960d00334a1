"""How far ``bmex-wf demo``'s input and results are from the clean MNI152 they were made from.

The demo degrades nilearn's MNI152 T1w (masked by its brain mask), so it knows the clean
image: the degraded input and the enhanced brain are scored against it inside the brain
mask on the template grid (fitted PSNR and SSIM, :mod:`bmex_wf.metrics`), and the network's
grey and white matter against nilearn's MNI152 GM/WM maps (> 0.5): Dice and volumes. The
figures go to ``demo_scores.json`` next to the subject's outputs, where the subject report
finds them.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import nibabel as nib
import numpy as np

from ..labels import GM, WM
from ..metrics import dice, fitted_psnr, fitted_ssim

LOGGER = logging.getLogger("bmex_wf.demo")

#: File name of the scores, in the folder of the subject's outputs.
SCORES_NAME = "demo_scores.json"
#: Tissue labels of the network's dseg scored against the MNI152 tissue maps.
TISSUE_LABELS = {"GM": GM, "WM": WM}
#: Probability above which a voxel of an MNI152 tissue map counts as that tissue.
TISSUE_THRESHOLD = 0.5
REFERENCE = "MNI152 T1w (nilearn, 1 mm) in its brain mask"
_OTHER_SPACE = re.compile(r"_space-(?!T1w_)")


def clean_mni152() -> tuple[nib.Nifti1Image, np.ndarray]:
    """The demo's clean image (MNI152 T1w in its brain mask, scaled to 0..1000) and the mask."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template

    template = load_mni152_template(resolution=1)
    mask = np.asarray(load_mni152_brain_mask(resolution=1).dataobj) > 0
    data = np.asarray(template.get_fdata(), dtype=np.float32) * mask
    data *= 1000.0 / max(float(data.max()), 1e-6)
    return nib.Nifti1Image(data, template.affine), mask


def mni152_tissues() -> dict[str, np.ndarray]:
    """nilearn's MNI152 GM and WM maps (1 mm) above :data:`TISSUE_THRESHOLD`, by tissue."""
    from nilearn.datasets import load_mni152_gm_template, load_mni152_wm_template

    maps = {"GM": load_mni152_gm_template(resolution=1), "WM": load_mni152_wm_template(resolution=1)}
    return {name: np.asarray(img.dataobj) > TISSUE_THRESHOLD for name, img in maps.items()}


def on_grid(img, reference, order: int = 1) -> np.ndarray:
    """The data of ``img`` on the grid of ``reference`` (as they are when the grids agree)."""
    from ..image.resample import resample_to_reference

    if img.shape[:3] != reference.shape[:3] or not np.allclose(img.affine, reference.affine, atol=1e-4):
        img = resample_to_reference(img, reference, order=order)
    return np.asarray(img.dataobj, dtype=np.float32)


def image_scores(image, clean, mask) -> dict[str, float]:
    """Fitted PSNR (dB) and fitted SSIM of ``image`` against ``clean`` inside ``mask``."""
    return {"fitted_psnr_db": fitted_psnr(image, clean, mask),
            "fitted_ssim": fitted_ssim(image, clean, mask)}


def tissue_scores(dseg, references: dict[str, np.ndarray], voxel_ml: float) -> dict[str, dict]:
    """Dice and volumes (mL) of each tissue of ``dseg`` (:data:`TISSUE_LABELS`) and of its reference."""
    labels = np.rint(np.asarray(dseg)).astype(np.int16)
    scores = {}
    for name, reference in references.items():
        found = labels == TISSUE_LABELS[name]
        scores[name] = {"dice": dice(found, reference), "volume_ml": float(found.sum()) * voxel_ml,
                        "reference_volume_ml": float(np.count_nonzero(reference)) * voxel_ml}
    return scores


def _native(folder: Path, pattern: str) -> Path:
    """The first file matching ``pattern`` in no space other than the input's (``space-T1w``)."""
    found = sorted(p for p in folder.glob(pattern) if not _OTHER_SPACE.search(p.name))
    if not found:
        raise FileNotFoundError(f"{folder}: no {pattern} in the input's space")
    return found[0]


def score_demo(derivatives_dir, bids_dir) -> dict:
    """Scores of a finished demo run (``OUTPUT_DIR/derivatives`` and ``OUTPUT_DIR/bids``)."""
    from ..postproc.volumes import voxel_volume_ml

    derivatives_dir, bids_dir = Path(derivatives_dir), Path(bids_dir)
    files = {"input": _native(bids_dir, "sub-*/**/anat/*_T1w.nii.gz"),
             "enhanced": _native(derivatives_dir, "sub-*/**/*_desc-enhancedbrain_T1w.nii.gz"),
             "dseg": _native(derivatives_dir, "sub-*/**/*_dseg.nii.gz")}
    clean, mask = clean_mni152()
    reference = clean.get_fdata(dtype=np.float32)
    scores = {"reference": REFERENCE,
              "files": {key: str(path) for key, path in files.items()}}
    for key in ("input", "enhanced"):
        scores[key] = image_scores(on_grid(nib.load(files[key]), clean), reference, mask)
        LOGGER.info("%s vs clean MNI152: fitted PSNR %.2f dB, fitted SSIM %.4f", key,
                    scores[key]["fitted_psnr_db"], scores[key]["fitted_ssim"])
    scores["tissues"] = tissue_scores(on_grid(nib.load(files["dseg"]), clean, order=0),
                                      mni152_tissues(), voxel_volume_ml(clean))
    for name, values in scores["tissues"].items():
        LOGGER.info("%s vs MNI152 %s > %.1f: Dice %.3f, %.0f mL (reference %.0f mL)", name, name,
                    TISSUE_THRESHOLD, values["dice"], values["volume_ml"], values["reference_volume_ml"])
    return scores


def write_scores(scores: dict) -> Path:
    """Write ``scores`` as :data:`SCORES_NAME` in the folder of the enhanced brain."""
    from ..bids.derivatives import atomic_write_json

    return atomic_write_json(Path(scores["files"]["enhanced"]).parent / SCORES_NAME, scores)


def find_scores(output_dir, subject: str) -> dict | None:
    """The demo scores of ``sub-<subject>`` in ``output_dir``, or None (not a demo run)."""
    found = sorted((Path(output_dir) / f"sub-{subject.removeprefix('sub-')}").rglob(SCORES_NAME))
    return json.loads(found[0].read_text()) if found else None


def tissues_text(scores: dict) -> str:
    """The tissue figures in words: Dice and volumes of GM and WM."""
    return "; ".join(f"{name} Dice {v['dice']:.3f}, {v['volume_ml']:.0f} mL "
                     f"(MNI152 {v['reference_volume_ml']:.0f} mL)" for name, v in scores["tissues"].items())


def summary_line(scores: dict) -> str:
    """One line of the figures: input -> enhanced image scores, then the tissues."""
    before, after = scores["input"], scores["enhanced"]
    return (f"Distance to the clean MNI152 (input -> enhanced): fitted PSNR "
            f"{before['fitted_psnr_db']:.2f} -> {after['fitted_psnr_db']:.2f} dB, fitted SSIM "
            f"{before['fitted_ssim']:.4f} -> {after['fitted_ssim']:.4f}; {tissues_text(scores)}")


def shortfall_line(scores: dict) -> str | None:
    """A plain warning when the enhanced brain is further from the clean template than the input."""
    # The gap between the two figures as the summary line prints them.
    before, after = (round(scores[key]["fitted_psnr_db"], 2) for key in ("input", "enhanced"))
    if after >= before:
        return None
    return (f"The enhanced brain is {before - after:.2f} dB further from the clean MNI152 than the "
            "degraded input (fitted PSNR). The built-in compact model enhances much less well than "
            "the published model (MODEL_CARD.md); install the official BME-X weights for real use "
            "(README, 'Model weights').")


def report_table(scores: dict) -> dict[str, dict[str, str]]:
    """The scores as the groups of a report metadata table (group -> row -> text)."""
    images = {title: f"fitted PSNR {scores[key]['fitted_psnr_db']:.2f} dB, "
                     f"fitted SSIM {scores[key]['fitted_ssim']:.4f}"
              for key, title in (("input", "Degraded input"), ("enhanced", "Enhanced brain"))}
    tissues = {f"{name} (label {TISSUE_LABELS[name]})":
               f"Dice {v['dice']:.3f}; {v['volume_ml']:.0f} mL (MNI152: {v['reference_volume_ml']:.0f} mL)"
               for name, v in scores["tissues"].items()}
    return {f"Images vs the {scores['reference']}": images,
            f"Tissues vs the MNI152 tissue maps above {TISSUE_THRESHOLD:g}": tissues}
