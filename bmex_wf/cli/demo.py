"""``bmex-wf demo OUTPUT_DIR``: enhance a degraded MNI152 brain end to end.

Builds a one-subject BIDS dataset from nilearn's bundled MNI152 T1w template
(skull-stripped with nilearn's MNI152 brain mask, scaled to 0..1000, degraded
with thick slices, head motion and noise by the training degradations, adult),
runs the participant level of the BIDS App on it (built-in model unless
official weights are installed), scores the results against the clean MNI152
(:mod:`bmex_wf.reports.demo_scores`; the subject report shows the figures too) and
prints where the report is, then the scores.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from ..logging_setup import configure_logging

LOGGER = logging.getLogger("bmex_wf.demo")

#: Degradations applied to the demo image (names from bmex_wf.training.degradations).
DEMO_DEGRADATIONS = ("anisotropy", "motion", "noise")
SUBJECT = "01"
#: Age written to participants.tsv (years): an adult.
AGE_YEARS = 30


def get_parser() -> argparse.ArgumentParser:
    """Parser of ``bmex-wf demo``."""
    parser = argparse.ArgumentParser(
        prog="bmex-wf demo",
        description="Build a one-subject BIDS dataset from the MNI152 T1w template, degraded with "
        "thick slices, motion and noise, run the participant level on it and print where the "
        "report is. Inputs go to OUTPUT_DIR/bids, results to OUTPUT_DIR/derivatives.")
    parser.add_argument("output_dir", type=lambda v: Path(v).expanduser().absolute(),
                        help="folder for the demo dataset, work files and results")
    parser.add_argument("--seed", type=int, default=0, help="seed of the degradations (default: 0)")
    parser.add_argument("--nprocs", type=int, default=None, help="processes for the workflow")
    parser.add_argument("--build-only", action="store_true", help="only build the demo dataset")
    return parser


def demo_image(seed: int = 0):
    """The degraded, skull-stripped MNI152 T1w image (nibabel, int16, 1 mm)."""
    import nibabel as nib

    from ..reports.demo_scores import clean_mni152
    from ..training.degradations import degrade

    clean, mask = clean_mni152()
    data = np.asarray(clean.dataobj, dtype=np.float32)
    spacing = float(np.mean(clean.header.get_zooms()[:3]))
    degraded = degrade(data, DEMO_DEGRADATIONS, seed=seed, spacing_mm=spacing, renormalize=False)
    degraded = np.rint(np.clip(degraded, 0, 32767) * mask).astype(np.int16)
    img = nib.Nifti1Image(degraded, clean.affine)
    img.set_qform(clean.affine, code=1)
    img.set_sform(clean.affine, code=1)
    return img


def build_demo_dataset(bids_dir, seed: int = 0) -> Path:
    """Write the one-subject demo dataset; returns the image path."""
    import nibabel as nib

    bids_dir = Path(bids_dir)
    anat = bids_dir / f"sub-{SUBJECT}" / "anat"
    anat.mkdir(parents=True, exist_ok=True)
    (bids_dir / "dataset_description.json").write_text(json.dumps({
        "Name": "bmex-wf demo: MNI152 T1w degraded with thick slices, motion and noise",
        "BIDSVersion": "1.9.0", "DatasetType": "raw",
        "GeneratedBy": [{"Name": "bmex-wf demo"}]}, indent=2))
    (bids_dir / "participants.tsv").write_text(f"participant_id\tage\nsub-{SUBJECT}\t{AGE_YEARS}\n")
    (bids_dir / "participants.json").write_text(json.dumps(
        {"age": {"Description": "age at scan (adult)", "Units": "years"}}, indent=2))
    image = anat / f"sub-{SUBJECT}_T1w.nii.gz"
    nib.save(demo_image(seed), image)
    (anat / f"sub-{SUBJECT}_T1w.json").write_text(json.dumps({
        "Description": "MNI152 T1w template (nilearn), skull-stripped, degraded: "
        + ", ".join(DEMO_DEGRADATIONS)}, indent=2))
    LOGGER.info("Demo dataset written to %s", bids_dir)
    return image


def main(argv=None) -> int:
    """Run ``bmex-wf demo``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    configure_logging()
    opts = get_parser().parse_args(argv)
    bids_dir, out_dir = opts.output_dir / "bids", opts.output_dir / "derivatives"
    build_demo_dataset(bids_dir, opts.seed)
    if opts.build_only:
        return 0
    from .participant import bids_app_main

    args = [str(bids_dir), str(out_dir), "participant", "-w", str(opts.output_dir / "work"),
            "--brain-mask-source", "nonzero"]
    if opts.nprocs:
        args += ["--nprocs", str(opts.nprocs)]
    code = bids_app_main(args)
    scores = None
    if code == 0:
        try:
            scores = score_and_report(out_dir, bids_dir)
        except (OSError, ValueError) as err:
            LOGGER.error("Scoring the demo against the clean MNI152 failed: %s", err)
            code = 1
    reports = sorted(out_dir.glob("sub-*.html"))
    if reports:
        # The lines the user is looking for go to stdout.
        sys.stdout.write(f"Report: {reports[0]}\n")
        if scores is not None:
            from ..reports.demo_scores import shortfall_line, summary_line

            sys.stdout.write(summary_line(scores) + "\n")
            if shortfall := shortfall_line(scores):
                LOGGER.warning("%s", shortfall)
    else:
        LOGGER.error("No report was written under %s (exit code %d)", out_dir, code)
    return code if reports else (code or 1)


def score_and_report(out_dir: Path, bids_dir: Path) -> dict:
    """Score the run against the clean MNI152, write the scores, rebuild the subject report."""
    from ..reports import generate_subject_report
    from ..reports.demo_scores import score_demo, write_scores

    scores = score_demo(out_dir, bids_dir)
    LOGGER.info("Demo scores written to %s", write_scores(scores))
    configs = sorted((out_dir / "logs").glob("config-*.toml"), key=lambda p: p.stat().st_mtime)
    run_uuid = configs[-1].stem.removeprefix("config-") if configs else None
    generate_subject_report(out_dir, SUBJECT, run_uuid=run_uuid)
    return scores


if __name__ == "__main__":
    sys.exit(main())
