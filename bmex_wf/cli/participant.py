"""The participant level: resolve, plan, build, run, collect each image's outcome, report.

The config comes from :mod:`.parser`; :mod:`.workflow` plans and builds one workflow per image;
:mod:`.runner` runs it; :mod:`.outcomes` says which images are OK; :mod:`.reporting` writes
the subject reports.
"""

from __future__ import annotations

import logging
import shutil
import time

from ..execution.workdir_lock import GUARD_NAME, LOCK_NAME, WorkDirLocked, work_dir_lock
from .config import RunConfig
from .group import run_group
from .outcomes import Outcome, collect_outcomes, log_summary, write_summary
from .parser import build_config, parse_args
from .prerequisites import MissingPrerequisite
from .reporting import report_outcomes, reports_only
from .runner import check_run_prerequisites, configure_nipype, run_workflow, setup_logging
from .workflow import bibtex, build_workflow, citation_text, plan_jobs, write_graph

LOGGER = logging.getLogger("bmex_wf.cli")
def run_participant(cfg: RunConfig) -> int:
    """Participant level; returns the exit code (0 only if every image succeeded)."""
    try:
        check_run_prerequisites(cfg)
        with work_dir_lock(cfg.work_dir, force_unlock=cfg.force_unlock):
            return _run_participant(cfg)
    except (MissingPrerequisite, WorkDirLocked) as exc:
        LOGGER.error("%s", exc)
        return 2


def _run_participant(cfg: RunConfig) -> int:
    from ..bids.derivatives import write_citation, write_dataset_files
    from ..bids.inputs import validation_warnings

    if cfg.clean_workdir and cfg.work_dir.exists():
        LOGGER.info("Emptying the work directory %s", cfg.work_dir)
        for entry in cfg.work_dir.iterdir():
            if entry.name in (LOCK_NAME, GUARD_NAME):  # the run's own lock stays
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
    logs_dir = cfg.output_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    LOGGER.info("Run %s: configuration written to %s", cfg.run_uuid, cfg.write())
    cfg.write(logs_dir / f"config-{cfg.run_uuid}.toml")
    try:
        write_dataset_files(cfg.output_dir, cfg.bids_dir)
    except ValueError as exc:
        LOGGER.error("%s", exc)
        return 1
    if cfg.reports_only:
        return reports_only(cfg)
    if not cfg.skip_bids_validation:
        for problem in validation_warnings(cfg.bids_dir):
            LOGGER.warning("BIDS validation: %s", problem)
    outcomes: dict[str, Outcome] = {}
    try:
        jobs = plan_jobs(cfg, outcomes)
    except ValueError as exc:
        LOGGER.error("%s", exc)
        return 1
    if cfg.stop_on_first_crash and any(o.status == "failed" for o in outcomes.values()):
        return log_summary(outcomes)
    workflow, jobs = build_workflow(cfg, jobs, outcomes)
    write_citation(cfg.output_dir, citation_text(workflow), bibtex())
    if cfg.boilerplate_only:
        LOGGER.info("Boilerplate written to %s", logs_dir / "CITATION.md")
        return 0
    if cfg.write_graph:
        write_graph(workflow)
    if jobs and not (cfg.stop_on_first_crash and any(
            o.status == "failed" for o in outcomes.values())):
        configure_nipype(workflow, cfg, logs_dir)
        start = time.time()
        run_workflow(workflow, cfg)
        collect_outcomes(cfg, workflow, jobs, outcomes, start, logs_dir)
        report_outcomes(cfg, jobs, outcomes)
    write_summary(logs_dir, cfg.run_uuid, outcomes)
    return log_summary(outcomes)


def bids_app_main(argv) -> int:
    """Parse BIDS App arguments and run the requested level; returns the exit code."""
    opts = parse_args(argv)
    setup_logging(opts.verbose)
    cfg = build_config(opts)
    if cfg.analysis_level == "group":
        return run_group(cfg)
    return run_participant(cfg)

