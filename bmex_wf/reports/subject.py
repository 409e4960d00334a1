"""Per-subject report: ``OUTPUT_DIR/sub-<label>.html`` assembled with nireports."""

from __future__ import annotations

import html
import logging
import re
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

from .. import __version__
from ..bids.derivatives import atomic_write_text
from .demo_scores import find_scores, report_table
from .paths import figures_dir, report_template, reports_spec, strip_prefix, subject_report
from .qc import QCRecordError, qc_from_summary

LOGGER = logging.getLogger("bmex_wf.reports")


class ReportError(ValueError):
    """A report that cannot be assembled from what is in the output folder."""


def _summary_metadata(subject: str, figures: Path) -> dict[str, Any]:
    summaries = sorted(figures.glob("*_desc-summary_*.html"))
    images = {}
    for path in summaries:
        try:
            record = qc_from_summary(path)
        except QCRecordError as err:
            LOGGER.warning("%s", err)
            continue
        qi = record.get("qi")
        images[path.name.replace("_desc-summary", "").rsplit(".", 1)[0]] = (
            f"QI {qi:.4f}" if isinstance(qi, (int, float)) else "QI n/a")
    return {"Summary": {"Participant": subject, "Images processed": len(summaries), **images}}


def _spec_for(spec: Path, metadata: dict[str, Any], folder: Path) -> Path:
    """``spec`` without the metadata reportlets whose metadata is absent, nor sections left empty.

    The copy is written to ``folder``; e.g. the demo section is there only for a demo run.
    """
    import yaml

    def present(reportlet: dict) -> bool:
        wanted = reportlet.get("metadata")
        return (not wanted or isinstance(wanted, dict)
                or reportlet.get("settings", {}).get("id") in metadata)

    settings = yaml.safe_load(spec.read_text())
    sections = []
    for section in settings["sections"]:
        reportlets = [r for r in section["reportlets"] if present(r)]
        if reportlets:
            sections.append({**section, "reportlets": reportlets})
    out = folder / spec.name
    out.write_text(yaml.safe_dump({**settings, "sections": sections}, sort_keys=False, width=1000,
                                  allow_unicode=True))
    return out


def _subject_crash_files(logs_dir: Path, label: str, dest: Path) -> list[Path]:
    """Link the crash files of ``logs_dir`` (and ``logs_dir/sub-<label>``) naming ``label``."""
    pattern = re.compile(rf"sub[-_]{re.escape(label)}(?![a-zA-Z0-9])")
    crashes = [*logs_dir.glob("crash*.*"), *(logs_dir / f"sub-{label}").glob("crash*.*")]
    linked = []
    for crash in sorted(crashes):
        if pattern.search(crash.name) or pattern.search(crash.read_text(errors="replace")):
            link = dest / crash.name
            link.symlink_to(crash)
            linked.append(link)
    return linked


def generate_subject_report(output_dir: str | Path, subject: str, *,
                            run_uuid: str | None = None,
                            spec: str | Path | None = None,
                            command: str | None = None) -> Path:
    """Write ``OUTPUT_DIR/sub-<label>.html`` from the figures in ``sub-<label>/figures``.

    Parameters
    ----------
    output_dir
        The derivatives folder holding ``sub-<label>/figures``, ``logs/CITATION.*`` and
        Nipype crash files in ``logs/`` (those naming the participant are shown).
    subject
        Participant label, with or without ``sub-``.
    run_uuid
        Identifier of the run, shown in the provenance panel.
    spec
        Report specification; defaults to ``bmex_wf/data/reports-spec.yml``.
    command
        Command line shown in the provenance panel.

    Returns
    -------
    Path
        The HTML file written.
    """
    from nireports.assembler.report import Report

    output_dir = Path(output_dir).absolute()
    label = strip_prefix(subject, "sub-")
    figures = figures_dir(output_dir, label)
    if not figures.is_dir():
        raise ReportError(f"{figures}: no figures folder for participant {label}")
    provenance = {"Execution provenance": {
        "bmex-wf version": __version__,
        "Report generated": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "Run identifier": run_uuid or "n/a",
        **({"Command": f"<code>{html.escape(command)}</code>"} if command else {}),
    }}
    final = subject_report(output_dir, label)
    metadata = {"summary-meta": _summary_metadata(label, figures), "provenance-meta": provenance}
    demo = find_scores(output_dir, label)
    if demo is not None:
        metadata["demo-meta"] = report_table(demo)
    logs_dir = output_dir / "logs"
    logs_dir.mkdir(exist_ok=True)
    # nireports shows crash files by their path below OUTPUT_DIR: this participant's are
    # linked into a short-lived hidden folder of logs/
    with TemporaryDirectory(prefix="bmex-report-") as tmp, \
            TemporaryDirectory(prefix=f".crash-sub-{label}-", dir=logs_dir) as crash_dir:
        _subject_crash_files(logs_dir, label, Path(crash_dir))
        robj = Report(
            output_dir,
            run_uuid,
            bootstrap_file=_spec_for(Path(spec) if spec else reports_spec(), metadata, Path(tmp)),
            out_filename=str(Path(tmp) / final.name),
            reportlets_dir=output_dir,
            plugins=[],
            metadata={**metadata, "crash_dir": crash_dir},
            subject=label,
        )
        robj.template_path = report_template()
        robj.generate_report()
        atomic_write_text(final, Path(robj.out_filename).read_text(encoding="utf-8"))
    LOGGER.info("Report written: %s", final)
    return final
