"""Subject reports after a run, and ``--reports-only``; a report not written fails its images."""

from __future__ import annotations

import logging

from .. import reports
from .config import RunConfig

LOGGER = logging.getLogger("bmex_wf.cli")

def subject_reports(cfg: RunConfig, subjects) -> dict[str, str]:
    """``sub-<label>.html`` for each subject; returns ``{subject: why}`` of reports not written."""
    failed = {}
    for subject in sorted(set(subjects)):
        try:
            page = reports.generate_subject_report(cfg.output_dir, subject, run_uuid=cfg.run_uuid)
            LOGGER.info("Report written: %s", page)
        except (reports.ReportError, OSError, ValueError) as exc:
            LOGGER.error("sub-%s: report not written: %s", subject, exc)
            failed[subject] = f"report sub-{subject}.html not written: {exc}"
    return failed


def report_outcomes(cfg: RunConfig, jobs: list, outcomes: dict) -> None:
    """Write the subject reports; an image whose report failed is failed too."""
    failed = subject_reports(cfg, [job.subject for job in jobs if job.subject])
    for job in jobs:
        key = str(job.path.relative_to(cfg.bids_dir)) if cfg.bids_dir else job.path.name
        if job.subject in failed and outcomes[key].status == "ok":
            outcomes[key].status, outcomes[key].reason = "failed", failed[job.subject]


def reports_only(cfg: RunConfig) -> int:
    """``--reports-only``: rebuild the subject pages from existing outputs."""
    try:
        pages = reports.rebuild_reports(cfg.output_dir, cfg.participant_label or None,
                                        run_uuid=cfg.run_uuid, group=False)
    except (reports.ReportError, OSError, ValueError) as exc:
        LOGGER.error("%s", exc)
        return 1
    LOGGER.info("Reports rebuilt: %s", ", ".join(str(p) for p in pages))
    return 0
