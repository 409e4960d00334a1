"""Visual QC reports: per-subject HTML pages and the group summary."""

from .group import collect_records, generate_group_report, logged_failures, run_group_level, write_group_tsv
from .rebuild import rebuild_reports, run_reports
from .subject import ReportError, generate_subject_report
from .validate import check_report

__all__ = [
    "ReportError",
    "check_report",
    "collect_records",
    "generate_group_report",
    "generate_subject_report",
    "logged_failures",
    "rebuild_reports",
    "run_group_level",
    "run_reports",
    "write_group_tsv",
]
