"""The built-in model on the real BME-X pair, run through ``init_bmex_wf`` as a user would.

The training half of the release's 24-month pair (``../shared/data/bmex_pair``) goes through
``init_bmex_wf`` (default tiling and precision) with the BME-X output's brain (output > 0) as a
precomputed mask; the enhanced brain (``enhanced_brain``) and the input are compared with the
BME-X output inside that mask: PSNR (peak 1000) and Pearson correlation. The scores are given
for the validation slab that training never saw (fractions 0.38-0.65 of the brain's
anterior-posterior extent, ``scripts/train_builtin.sh``) and for the whole half (trained on).

    python benchmarks/eval_pair.py [--model FILE] [--threads 2]

Last line: ``slab_psnr_in_db= slab_psnr_out_db= slab_gain_db= slab_corr_in= slab_corr_out=
slab_psnr_shifted_db= half_psnr_in_db= half_psnr_out_db= enhance_seconds=``
(``slab_psnr_shifted_db``: a yardstick, the input shifted by its mean difference from the BME-X
output over the slab, the best any "input plus a constant" can do; ``enhance_seconds``: the
network's time on the half brain, from the QC record).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
from importlib import resources
from pathlib import Path
from typing import NamedTuple

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bmex_wf.metrics import correlation, psnr
from bmex_wf.training.data import slab_bounds

PAIR = ROOT.parent / "shared" / "data" / "bmex_pair"
INPUT = "test_24m_half-train_T1w.nii.gz"
OUTPUT = "test_24m_half-train_desc-bmex_T1w.nii.gz"
#: The validation slab of training: network axis 2 (anterior-posterior, array axis 1 of this
#: LPS image), fractions of the brain's extent along it.
SLAB_AXIS, SLAB = 1, (0.38, 0.65)

LOGGER = logging.getLogger("eval_pair")


def slab_mask(mask: np.ndarray, axis: int = SLAB_AXIS, fractions=SLAB) -> np.ndarray:
    """The part of ``mask`` inside the validation slab along ``axis``."""
    start, stop = slab_bounds(mask, axis, *fractions)
    keep = np.zeros_like(mask)
    index = [slice(None)] * 3
    index[axis] = slice(start, stop)
    keep[tuple(index)] = mask[tuple(index)]
    return keep


class WorkflowRun(NamedTuple):
    """Outputs of :func:`run_workflow` on the input's grid, and the network's seconds."""

    enhanced_brain: Path
    dseg: Path
    enhance_seconds: float


def run_workflow(model: Path, image: Path, mask: Path, work: Path, threads: int,
                 age_months: float = 24) -> WorkflowRun:
    """``enhanced_brain`` and ``dseg`` of ``image`` through ``init_bmex_wf`` with ``model`` as the
    Month24 T1w model and ``mask`` as a precomputed mask, and the network's seconds (QC record)."""
    from bmex_wf.workflows.base import init_bmex_wf

    models = work / "models"
    models.mkdir(parents=True)
    shutil.copy(model, models / "BMEX-Month24-T1-model.pt")
    wf = init_bmex_wf(age_months=age_months, contrast="T1w", models_dir=str(models),
                      mask_source="precomputed", omp_nthreads=threads)
    wf.base_dir = str(work)
    wf.inputs.inputnode.in_file = str(image)
    wf.inputs.inputnode.in_mask = str(mask)
    ran = {node.name: node for node in wf.run(plugin="Linear").nodes()}
    qc = json.loads(Path(ran["write_qc"].result.outputs.out_file).read_text())
    return WorkflowRun(Path(ran["restore_enhanced_brain"].result.outputs.out_file),
                       Path(ran["restore_dseg"].result.outputs.out_file), qc["Timings"]["EnhanceSeconds"])


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=Path(str(
        resources.files("bmex_wf.data").joinpath("bmex-builtin-enhance.pt"))))
    parser.add_argument("--threads", type=int, default=2)
    opts = parser.parse_args(argv)
    if not (PAIR / INPUT).is_file():
        LOGGER.error("%s: the BME-X pair is not there (../shared/data/bmex_pair)", PAIR)
        return 1
    target = np.asarray(nib.load(PAIR / OUTPUT).dataobj, dtype=np.float32)
    source = np.asarray(nib.load(PAIR / INPUT).dataobj, dtype=np.float32)
    brain = target > 0
    slab = slab_mask(brain)
    with tempfile.TemporaryDirectory() as tmp:
        mask = Path(tmp) / "bmex_mask.nii.gz"
        out = nib.load(PAIR / OUTPUT)
        nib.Nifti1Image(brain.astype(np.uint8), out.affine, out.header).to_filename(mask)
        run = run_workflow(opts.model, PAIR / INPUT, mask, Path(tmp), opts.threads)
        enhanced = np.asarray(nib.load(run.enhanced_brain).dataobj, dtype=np.float32)
    scores = {
        "slab_psnr_in_db": psnr(source, target, slab), "slab_psnr_out_db": psnr(enhanced, target, slab),
        "slab_corr_in": correlation(source, target, slab), "slab_corr_out": correlation(enhanced, target, slab),
        "slab_psnr_shifted_db": psnr(source - float(np.mean(source[slab] - target[slab])), target, slab),
        "half_psnr_in_db": psnr(source, target, brain), "half_psnr_out_db": psnr(enhanced, target, brain),
    }
    scores["slab_gain_db"] = scores["slab_psnr_out_db"] - scores["slab_psnr_in_db"]
    scores["enhance_seconds"] = run.enhance_seconds
    LOGGER.info("model %s; slab %d voxels, half %d voxels", opts.model, int(slab.sum()), int(brain.sum()))
    order = ("slab_psnr_in_db", "slab_psnr_out_db", "slab_gain_db", "slab_corr_in", "slab_corr_out",
             "slab_psnr_shifted_db", "half_psnr_in_db", "half_psnr_out_db", "enhance_seconds")
    sys.stdout.write(" ".join(f"{k}={scores[k]:.4f}" for k in order) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
