"""``--reports-only``: rebuild the HTML reports from what an earlier run left in OUTPUT_DIR."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from .group import run_group_level
from .paths import strip_prefix, subjects_with_figures
from .subject import ReportError, generate_subject_report

LOGGER = logging.getLogger("bmex_wf.reports")


def rebuild_reports(output_dir: str | Path, participant_labels: Iterable[str] | None = None,
                    *, run_uuid: str | None = None, group: bool = True) -> list[Path]:
    """Re-assemble ``sub-<label>.html`` (and the group pages) without recomputing anything.

    Parameters
    ----------
    output_dir
        Derivatives folder of an earlier run (``sub-<label>/figures`` present).
    participant_labels
        Subjects to rebuild (with or without ``sub-``); all with figures when None.
    run_uuid
        Run identifier shown in the reports.
    group
        Also rewrite ``group_qc.tsv`` and ``group.html``.

    Returns
    -------
    list of Path
        The files written (subject pages, then ``group_qc.tsv`` and ``group.html``).

    Raises
    ------
    ReportError
        When a requested participant has no figures in ``output_dir``.
    """
    output_dir = Path(output_dir)
    available = subjects_with_figures(output_dir)
    if participant_labels:
        wanted = [strip_prefix(label, "sub-") for label in participant_labels]
        missing = sorted(set(wanted) - set(available))
        if missing:
            raise ReportError(f"{output_dir}: no figures for participant(s) "
                              f"{', '.join(missing)}; run the participant level first")
    else:
        wanted = available
    if not wanted:
        raise ReportError(f"{output_dir}: no sub-*/figures folders; nothing to rebuild")
    pages = [generate_subject_report(output_dir, label, run_uuid=run_uuid) for label in wanted]
    if group:
        pages.extend(run_group_level(output_dir))
    return pages


def run_reports(output_dir: str | Path, work_dir: str | Path | None = None,
                analysis_level: str = "participant", run_uuid: str | None = None,
                participant_labels: Iterable[str] | None = None) -> int:
    """Report step of the BIDS App; returns an exit code (0 when every page was written).

    ``participant``: the subject pages of ``participant_labels`` (all with figures when None)
    and the group pages; ``group``: the group pages only. ``work_dir`` is not needed: reports
    are built from OUTPUT_DIR alone, which is also what ``--reports-only`` does.
    """
    del work_dir  # everything needed is in OUTPUT_DIR
    try:
        if analysis_level == "group":
            run_group_level(output_dir)
        else:
            rebuild_reports(output_dir, participant_labels, run_uuid=run_uuid)
    except (ReportError, FileNotFoundError) as err:
        LOGGER.error("%s", err)
        return 1
    return 0
