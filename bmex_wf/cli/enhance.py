"""``bmex-wf enhance IN OUT_DIR --age-months N``: one image outside BIDS.

Its settings are resolved like the participant level's (:func:`bmex_wf.cli.parser.build_config`),
plugin file included; the work directory is locked and the outcome collected the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time

from ..execution.workdir_lock import WorkDirLocked, work_dir_lock
from .config import RunConfig
from .outcomes import Outcome, collect_outcomes, log_summary
from .parser import build_config, parse_enhance_args
from .prerequisites import MissingPrerequisite
from .reporting import report_outcomes
from .runner import check_run_prerequisites, configure_nipype, run_workflow, setup_logging
from .workflow import bibtex, citation_text, resolve_model

LOGGER = logging.getLogger("bmex_wf.cli")

def enhance_main(argv) -> int:
    """``bmex-wf enhance IN OUT_DIR --age-months N``: one image outside BIDS."""
    opts = parse_enhance_args(argv)
    setup_logging(opts.verbose)
    opts.work_dir = opts.work_dir or opts.output_dir / "work"
    cfg = build_config(opts)  # the participant level's defaults and plugin handling
    try:
        check_run_prerequisites(cfg)
        with work_dir_lock(cfg.work_dir, force_unlock=cfg.force_unlock):
            return _run_enhance(cfg, opts)
    except (MissingPrerequisite, WorkDirLocked) as exc:
        LOGGER.error("%s", exc)
        return 2


def _run_enhance(cfg: RunConfig, opts) -> int:
    """Plan, build and run ``bmex-wf enhance`` for one image (``cfg`` resolved)."""
    from niworkflows.engine.workflows import LiterateWorkflow as Workflow

    from ..age import age_from_override
    from ..bids.derivatives import write_citation
    from ..image.io import load_enhanceable
    from ..workflows.participant import ImageJob, init_image_wf

    key = opts.in_file.name
    outcomes = {key: Outcome(key)}
    # Reports are filed per subject: only for inputs named like BIDS files (sub-<label>_...).
    named = re.match(r"sub-([A-Za-z0-9]+)_", key)
    subject = named.group(1) if named else None
    try:
        job = ImageJob(path=opts.in_file, contrast=opts.contrast,
                       age=age_from_override(opts.age_months), mask=opts.mask)
        job = dataclasses.replace(job, model=resolve_model(job.group, job.contrast, cfg.models_dir))
        load_enhanceable(job.path, job.model.entry.voxel_mm)
        workflow = Workflow(name="bmex_enhance", base_dir=str(cfg.work_dir))
        workflow.add_nodes([init_image_wf(
            job=job, output_dir=cfg.output_dir, models_dir=cfg.models_dir,
            mask_source=cfg.brain_mask_source, use_gpu=cfg.use_gpu,
            omp_nthreads=cfg.omp_nthreads, tiling=cfg.tiling, precision=cfg.precision,
            reports=subject is not None, output_spaces=opts.output_spaces or [],
            output_resolution=cfg.output_resolution)])
    except (FileNotFoundError, ValueError) as exc:
        outcomes[key].status, outcomes[key].reason = "failed", str(exc)
        return log_summary(outcomes)
    logs_dir = cfg.output_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    cfg.write()
    write_citation(cfg.output_dir, citation_text(workflow), bibtex())
    configure_nipype(workflow, cfg, logs_dir)
    start = time.time()
    run_workflow(workflow, cfg)
    collect_outcomes(cfg, workflow, [job], outcomes, start, logs_dir)
    if subject is not None:
        report_outcomes(cfg, [dataclasses.replace(job, subject=subject)], outcomes)
    return log_summary(outcomes)
