"""Group level: ``group_qc.tsv`` (one row per image) and ``group.html`` (QI per age group).

Tissue volumes of each image (``<src>[_space-<C>]_desc-volumes_morph.tsv`` beside its anat
derivatives) join the row as ``<method>_<tissue>_mL`` columns.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..age import AGE_GROUPS
from ..bids.derivatives import atomic_write_text, source_entities
from ..postproc.volumes import METHODS, TISSUES, TissueError, read_volumes_table
from .paths import figure_entities, report_template, strip_prefix, subject_report, subjects_with_figures
from .qc import QCRecordError, qc_from_summary

LOGGER = logging.getLogger("bmex_wf.reports")

#: Tissue-volume columns of ``group_qc.tsv``: ``<method>_<CSF|GM|WM|brain>_mL``.
VOLUME_COLUMNS = tuple(f"{method}_{tissue}_mL" for method in METHODS
                       for tissue in (*TISSUES, "brain"))
#: Columns of ``group_qc.tsv``, in order.
GROUP_COLUMNS = ("subject", "session", "contrast", "age", "group", "qi", "tct_before",
                 "tct_after", "model", "mask_source", "status", *VOLUME_COLUMNS, "source",
                 "error")
#: Name of the per-image volumes table (after the source entities).
_VOLUMES_NAME = r"(?:_space-[a-zA-Z0-9]+)?_desc-volumes_morph\.tsv"


def find_volumes_table(output_dir: str | Path, subject: str, source: str,
                       contrast: str | None) -> Path | None:
    """The ``desc-volumes_morph.tsv`` of one image, or None.

    Looked for under ``OUTPUT_DIR/sub-<label>/`` as ``<src>_desc-volumes_morph.tsv`` or
    ``<src>_space-<X>_desc-volumes_morph.tsv`` (``<src>``: the source name without its
    contrast suffix); ``space-<contrast>`` wins when several match.
    """
    src = source_entities(source, contrast) if contrast else source
    pattern = re.compile(re.escape(src) + _VOLUMES_NAME + "$")
    folder = Path(output_dir) / f"sub-{strip_prefix(subject, 'sub-')}"
    found = sorted(p for p in folder.rglob("*_desc-volumes_morph.tsv")
                   if pattern.match(p.name) and "figures" not in p.parts)
    preferred = [p for p in found if f"_space-{contrast}_" in p.name]
    return (preferred or found or [None])[0]


def volume_cells(path: Path | None) -> dict[str, Any]:
    """``<method>_<tissue>_mL`` values of a volumes table (a warning and none if unreadable)."""
    if path is None:
        return {}
    try:
        table = read_volumes_table(path)
    except (OSError, TissueError) as err:
        LOGGER.warning("%s", err)
        return {}
    return {f"{method}_{tissue}_mL": value for method, values in table.items()
            if method in METHODS for tissue, value in values.items()}


def _row_from_record(record: dict[str, Any], entities: dict[str, str], source: str,
                     status: str) -> dict[str, Any]:
    model = record.get("model_file")
    return {
        "subject": entities.get("sub"),
        "session": entities.get("ses"),
        "contrast": record.get("contrast") or entities.get("suffix"),
        "age": record.get("age_months"),
        "group": record.get("age_group"),
        "qi": record.get("qi"),
        "tct_before": record.get("tct_before"),
        "tct_after": record.get("tct_after"),
        "model": Path(str(model)).name if model else None,
        "mask_source": record.get("mask_source"),
        "status": str(record.get("status") or status),
        "source": source,
        "error": record.get("error"),
    }


def collect_records(output_dir: str | Path,
                    failures: Iterable[dict[str, Any]] = ()) -> list[dict[str, Any]]:
    """One row per image, read from the summary reportlets under ``sub-*/figures``.

    Parameters
    ----------
    output_dir
        The derivatives folder.
    failures
        Images that failed before a summary was written: dictionaries with ``subject``,
        ``session``, ``contrast``, ``source`` and ``error`` (``status`` defaults to
        ``failed``).

    Returns
    -------
    list of dict
        Rows keyed by :data:`GROUP_COLUMNS`, sorted by subject, session, source.
    """
    rows = []
    for label in subjects_with_figures(output_dir):
        for path in sorted((Path(output_dir) / f"sub-{label}" / "figures").glob(
                "*_desc-summary_*.html")):
            source = path.name.split(".")[0].replace("_desc-summary", "")
            try:
                record = qc_from_summary(path)
            except QCRecordError as err:
                LOGGER.warning("%s", err)
                record = {"status": "unreadable", "error": str(err)}
            row = _row_from_record(record, figure_entities(path), source, "success")
            row.update(volume_cells(find_volumes_table(output_dir, label, source,
                                                       row["contrast"])))
            rows.append(row)
    for failure in failures:
        entities = {"sub": failure.get("subject"), "ses": failure.get("session"),
                    "suffix": failure.get("contrast")}
        rows.append(_row_from_record({"error": failure.get("error"),
                                      "status": failure.get("status")},
                                     entities, failure.get("source"), "failed"))
    for row in rows:
        for key, prefix in (("subject", "sub-"), ("session", "ses-")):
            if row[key]:
                row[key] = strip_prefix(str(row[key]), prefix)
    return sorted(rows, key=lambda r: (str(r["subject"]), str(r["session"]), str(r["source"])))


def _cell(value: Any) -> str:
    if value is None or value == "":
        return "n/a"
    if isinstance(value, float):
        return str(round(value, 4))
    return str(value).replace("\t", " ").replace("\n", " ")


def write_group_tsv(rows: list[dict[str, Any]], out_file: str | Path) -> Path:
    """Write the rows as a BIDS-style TSV (``n/a`` for missing values)."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n")
    writer.writerow(GROUP_COLUMNS)
    for row in rows:
        writer.writerow([_cell(row.get(col)) for col in GROUP_COLUMNS])
    return atomic_write_text(Path(out_file), buf.getvalue())


def _group_order(group: Any) -> tuple[int, str]:
    name = str(group)
    return (AGE_GROUPS.index(name) if name in AGE_GROUPS else len(AGE_GROUPS), name)


def qi_plot_svg(rows: list[dict[str, Any]]) -> str:
    """QI distribution per age group (box plot and points) as an inline SVG string."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    import numpy as np

    by_group: dict[str, list[float]] = {}
    for row in rows:
        if isinstance(row.get("qi"), (int, float)):
            by_group.setdefault(str(row.get("group")), []).append(float(row["qi"]))
    groups = sorted(by_group, key=_group_order)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(groups) + 2), 3.2))
    if groups:
        values = [by_group[g] for g in groups]
        ax.boxplot(values, widths=0.5, showfliers=False)
        rng = np.random.default_rng(0)
        for i, vals in enumerate(values, start=1):
            ax.plot(i + rng.uniform(-0.12, 0.12, len(vals)), vals, "o", color="tab:blue",
                    alpha=0.7, markersize=4)
        ax.set_xticks(range(1, len(groups) + 1), [f"{g}\n(n={len(by_group[g])})"
                                                  for g in groups])
        ax.axhline(1.0, color="tab:gray", linestyle="--", linewidth=0.8)
    else:
        ax.text(0.5, 0.5, "no QI values", ha="center", va="center", transform=ax.transAxes)
        ax.set_xticks([])
    ax.set_ylabel("QI (TCT before / after)")
    ax.set_xlabel("age group")
    fig.tight_layout()
    buf = io.StringIO()
    fig.savefig(buf, format="svg")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def generate_group_report(output_dir: str | Path, rows: list[dict[str, Any]]) -> Path:
    """Write ``OUTPUT_DIR/group.html``: QI per age group and a table linking subject reports."""
    import jinja2

    output_dir = Path(output_dir)
    template = report_template("group.tpl")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(template.parent)),
                             autoescape=jinja2.select_autoescape(["tpl", "html"]),
                             trim_blocks=True, lstrip_blocks=True)
    # Volume columns only where some image has them, so pages without volumes stay narrow.
    columns = [c for c in GROUP_COLUMNS if c != "error" and (
        c not in VOLUME_COLUMNS or any(row.get(c) is not None for row in rows))]
    table = []
    for row in rows:
        report = subject_report(output_dir, str(row["subject"])) if row["subject"] else None
        table.append({
            "cells": [_cell(row.get(col)) for col in columns],
            "link": report.name if report is not None and report.exists() else None,
            "error": row.get("error"),
            "failed": row.get("status") not in ("success", None),
        })
    html_text = env.get_template(template.name).render(
        title="bmex-wf group report",
        columns=columns,
        rows=table,
        n_images=len(rows),
        n_failed=sum(r["failed"] for r in table),
        qi_svg=qi_plot_svg(rows),
    )
    return atomic_write_text(output_dir / "group.html", html_text)


def logged_failures(logs_dir: str | Path) -> list[dict[str, Any]]:
    """Images whose latest run failed, from the run summaries ``logs/summary-*.tsv``.

    Each summary has the columns ``image``, ``status`` and ``reason``; later files (by
    modification time) override earlier ones, so an image fixed by a re-run is not listed.
    """
    latest: dict[str, dict[str, str]] = {}
    summaries = sorted(Path(logs_dir).glob("summary-*.tsv"), key=lambda p: p.stat().st_mtime)
    for summary in summaries:
        with summary.open(newline="") as fobj:
            for row in csv.DictReader(fobj, delimiter="\t"):
                if row.get("image"):
                    latest[row["image"]] = row
    failures = []
    for image, row in latest.items():
        if (row.get("status") or "").lower() in ("ok", "success"):
            continue
        entities = figure_entities(image)
        failures.append({"subject": entities.get("sub"), "session": entities.get("ses"),
                         "contrast": entities.get("suffix"),
                         "source": Path(image).name.split(".")[0],
                         "status": row.get("status") or "failed",
                         "error": row.get("reason") or None})
    return failures


def run_group_level(output_dir: str | Path,
                    failures: Iterable[dict[str, Any]] | None = None) -> tuple[Path, Path]:
    """Collect all images of ``output_dir`` and write ``group_qc.tsv`` and ``group.html``.

    ``failures`` defaults to the failed images of the run summaries in ``logs/`` that have no
    summary figure (see :func:`logged_failures`).
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        raise FileNotFoundError(f"{output_dir}: output folder does not exist")
    if failures is None:
        failures = logged_failures(output_dir / "logs")
    done = {path.name.split(".")[0].replace("_desc-summary", "")
            for path in output_dir.glob("sub-*/figures/*_desc-summary_*.html")}
    rows = collect_records(output_dir, [f for f in failures if f.get("source") not in done])
    if not rows:
        LOGGER.warning("%s: no processed images found (no sub-*/figures/*_desc-summary_*.html)",
                       output_dir)
    tsv = write_group_tsv(rows, output_dir / "group_qc.tsv")
    page = generate_group_report(output_dir, rows)
    LOGGER.info("Group report written: %s (%d images)", page, len(rows))
    return tsv, page
