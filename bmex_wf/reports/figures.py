"""Figures and HTML fragments that nilearn/nireports do not provide: summary panel, histograms."""

from __future__ import annotations

import html
import json
import logging
import re
from numbers import Number
from pathlib import Path
from typing import Any

import numpy as np

from .qc import QC_SCRIPT_CLASS, timings_text

LOGGER = logging.getLogger("bmex_wf.reports")

_SUMMARY_ROWS = (
    ("Age (months)", "age_months"),
    ("Age source", "age_source"),
    ("Age group", "age_group"),
    ("Contrast", "contrast"),
    ("Model file", "model_file"),
    ("Model sha256", "model_sha256"),
    ("Model kind", "builtin"),
    ("Template", "template"),
    ("Brain mask source", "mask_source"),
    ("Tiling", "tiling"),
    ("Precision", "precision"),
    ("Device", "device"),
    ("QI (TCT before / after)", "qi"),
    ("TCT before", "tct_before"),
    ("TCT after", "tct_after"),
    ("Run time", "timings"),
    ("Status", "status"),
)


def _fmt(value: Any) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Number):
        return f"{value:.4g}" if isinstance(value, float) else str(value)
    return str(value)


def summary_html(record: dict[str, Any], title: str | None = None) -> str:
    """HTML fragment (a two-column table) summarising one image's QC record.

    The raw QC dictionary is embedded as ``<script type="application/json" class="bmex-qc">``
    so the group level and ``--reports-only`` can read it back from the figures folder.

    Parameters
    ----------
    record
        Normalised QC record (:func:`bmex_wf.reports.qc.normalize_qc`).
    title
        Optional heading (e.g. the source file name).
    """
    values = dict(record)
    builtin = record.get("builtin")
    values["builtin"] = (None if builtin is None
                         else "built-in compact model" if builtin else "official release weights")
    values["timings"] = timings_text(record)
    rows = [f"<tr><th>{html.escape(label)}</th><td>{html.escape(_fmt(values.get(key)))}</td></tr>"
            for label, key in _SUMMARY_ROWS if key != "status" or values.get(key) is not None]
    if record.get("error"):
        rows.append(f'<tr><th>Error</th><td class="text-danger">'
                    f'{html.escape(str(record["error"]))}</td></tr>')
    versions = record.get("versions") or {}
    if versions:
        text = ", ".join(f"{k} {v}" for k, v in sorted(versions.items()))
        rows.append(f"<tr><th>Versions</th><td>{html.escape(text)}</td></tr>")
    heading = f"<h3 class=\"elem-title\">{html.escape(title)}</h3>\n" if title else ""
    return (f'{heading}<table class="table table-sm bmex-summary">\n' + "\n".join(rows)
            + "\n</table>\n" + embed_qc(record.get("raw", {})))


def embed_qc(raw: dict[str, Any]) -> str:
    """The QC dictionary as an inert JSON ``<script>`` element."""
    text = json.dumps(raw, sort_keys=True, default=str).replace("</", "<\\/")
    return f'<script type="application/json" class="{QC_SCRIPT_CLASS}">{text}</script>\n'


def landmark_values(landmarks: dict[str, Any]) -> tuple[list[float], float | None]:
    """Intensity landmarks (all numbers held in lists) and the threshold (``mean``), if any."""
    points: list[float] = []
    threshold = None
    for key, value in landmarks.items():
        if isinstance(value, (list, tuple, np.ndarray)):
            flat = np.asarray(value, dtype=float).ravel()
            points.extend(float(v) for v in flat if np.isfinite(v))
        elif key.lower() in ("mean", "threshold") and isinstance(value, Number):
            threshold = float(value)
    return sorted(points), threshold


def plot_histograms(before: np.ndarray, after: np.ndarray, landmarks: dict[str, Any],
                    out_file: str | Path, *, bins: int = 200, title: str | None = None) -> str:
    """Plot intensity histograms before and after template matching, with template landmarks.

    Parameters
    ----------
    before, after
        Brain voxel intensities before and after histogram matching (1-D or any shape).
    landmarks
        Template landmark dictionary (:func:`bmex_wf.preproc.intensity.template_landmarks`).
    out_file
        SVG file to write.
    bins
        Number of histogram bins.
    title
        Figure title.

    Returns
    -------
    str
        ``out_file`` as an absolute path.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    before = np.asarray(before, dtype=float).ravel()
    after = np.asarray(after, dtype=float).ravel()
    before, after = before[np.isfinite(before)], after[np.isfinite(after)]
    points, threshold = landmark_values(landmarks)
    hi = max([1.0, *points, *(np.percentile(a, 99.9) for a in (before, after) if a.size)])
    edges = np.linspace(0, hi * 1.02, bins + 1)

    fig, ax = plt.subplots(figsize=(8, 3.2))
    for values, label, color in ((before, "before matching", "tab:gray"),
                                 (after, "after matching", "tab:blue")):
        if values.size:
            ax.hist(values, bins=edges, histtype="step", density=True, label=label,
                    color=color, linewidth=1.4)
    for i, value in enumerate(points):
        ax.axvline(value, color="tab:orange", linewidth=0.8, alpha=0.8,
                   label="template landmarks" if i == 0 else None)
    if threshold is not None:
        ax.axvline(threshold, color="tab:red", linestyle="--", linewidth=0.8,
                   label="template threshold (mean)")
    ax.set_xlabel("intensity (template units)")
    ax.set_ylabel("density")
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    out = Path(out_file).absolute()
    fig.savefig(out, format="svg")
    plt.close(fig)
    return str(out)


def matching_histogram_data(in_file: str | Path, in_mask: str | Path,
                            landmarks: dict[str, Any], *,
                            matched: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Brain intensities before and after matching to the template landmarks.

    "Before" is the image windowed to template units
    (:func:`bmex_wf.preproc.intensity.window_intensities`), "after" the same voxels once
    histogram-matched (:func:`bmex_wf.preproc.intensity.match_histogram`), unless the matched
    image is given.

    Returns
    -------
    before, after
        1-D arrays of the voxels inside the mask.
    """
    import nibabel as nb

    from bmex_wf.preproc.intensity import match_histogram, window_intensities

    data = np.asanyarray(nb.load(str(in_file)).dataobj).squeeze().astype(np.float32)
    mask = np.asanyarray(nb.load(str(in_mask)).dataobj).squeeze() > 0
    if mask.shape != data.shape:
        raise ValueError(f"{in_mask}: mask shape {mask.shape} differs from image {data.shape}")
    windowed = window_intensities(np.where(mask, data, 0))
    if matched is None:
        after = match_histogram(windowed, landmarks)
    else:
        after = np.asanyarray(nb.load(str(matched)).dataobj).squeeze().astype(np.float32)
    return windowed[mask], np.asarray(after)[mask]


_SVG_SIZE = re.compile(r'\s(?:height|width)=["\'][0-9.]+[a-z%]*["\']')


def finalize_svg(text: str) -> str:
    """A figure ready for the report page, so the assembler leaves the file untouched.

    The root ``<svg>`` loses its fixed ``width``/``height`` (the page scales it) and follows the
    XML declaration on the same line. nireports' assembler otherwise rewrites each figure in
    place (to drop those attributes), which would expose a partly written file in OUTPUT_DIR.
    """
    start = text.find("<svg")
    if start < 0:
        raise ValueError("not an SVG document: no <svg> element")
    end = text.index(">", start)
    root = _SVG_SIZE.sub("", text[start:end]).replace("viewbox", "viewBox")
    return '<?xml version="1.0" encoding="utf-8"?>' + root + text[end:]
