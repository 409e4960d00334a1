"""The group level: ``group_qc.tsv`` and ``group.html`` from the participant outputs."""

from __future__ import annotations

import logging
from pathlib import Path

from .. import reports
from .config import RunConfig

LOGGER = logging.getLogger("bmex_wf.cli")

def failures_from_summaries(logs_dir: Path) -> list[dict]:
    """Images whose latest participant run failed, from ``logs/summary-*.tsv``."""
    from ..bids.ages import read_tsv

    latest = {}
    for table in sorted(logs_dir.glob("summary-*.tsv"), key=lambda p: p.stat().st_mtime):
        for row in read_tsv(table):
            latest[row["image"]] = row
    failures = []
    for image, row in latest.items():
        if row["status"] != "ok":
            name = Path(image).name
            ents = dict(part.split("-", 1) for part in name.split("_") if "-" in part)
            failures.append({"subject": ents.get("sub"), "session": ents.get("ses"),
                             "contrast": name.split("_")[-1].split(".")[0],
                             "source": name.split(".")[0], "error": row["reason"],
                             "status": "failed"})
    return failures


def run_group(cfg: RunConfig) -> int:
    """Group level: ``group_qc.tsv`` and ``group.html`` from the participant outputs."""
    try:
        tsv, page = reports.run_group_level(
            cfg.output_dir, failures_from_summaries(cfg.output_dir / "logs"))
    except (reports.ReportError, OSError, ValueError) as exc:
        LOGGER.error("%s", exc)
        return 1
    LOGGER.info("Group outputs: %s, %s", tsv, page)
    return 0
