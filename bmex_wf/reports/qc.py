"""Reading the per-image QC record (the workflow's ``qc`` JSON) in a tolerant way."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

#: Class of the ``<script type="application/json">`` element holding a QC record in the
#: summary reportlet (``*_desc-summary_<contrast>.html``).
QC_SCRIPT_CLASS = "bmex-qc"


class QCRecordError(ValueError):
    """A QC JSON file that cannot be read."""


#: Output field -> accepted key names (compared lower-case, non-alphanumerics removed).
QC_FIELDS: dict[str, tuple[str, ...]] = {
    "qi": ("qi", "qualityindex"),
    "tct_before": ("tctbefore", "tctoriginal", "tctin"),
    "tct_after": ("tctafter", "tctenhanced", "tctout"),
    "age_months": ("agemonths", "age", "ageused"),
    "age_source": ("agesource", "agefrom"),
    "age_group": ("agegroup", "group", "modelgroup"),
    "contrast": ("contrast", "modality", "suffix"),
    "model_file": ("modelfile", "model", "modelpath", "modelfilename"),
    "model_sha256": ("modelsha256", "sha256", "modelhash"),
    "builtin": ("builtin", "modelbuiltin", "isbuiltin", "builtinmodel"),
    "mask_source": ("masksource", "brainmasksource"),
    "device": ("device",),
    "precision": ("precision",),
    "tiling": ("tiling",),
    "template": ("template", "templatename"),
    "status": ("status",),
    "error": ("error", "message"),
    "source_file": ("sourcefile", "source", "infile", "input", "inputpath"),
}


def _norm(key: str) -> str:
    return re.sub(r"[^a-z0-9]", "", key.lower())


def _flatten(data: dict, prefix: str = "") -> dict[str, Any]:
    """Nested dicts become ``parent child`` keys, e.g. ``{"TCT": {"before": 1}}`` -> TCTbefore."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + " "))
        flat.setdefault(_norm(name), value)
    return flat


def normalize_qc(raw: dict) -> dict[str, Any]:
    """Map a QC dictionary onto the fields the reports use (missing fields are ``None``).

    Keys are matched case-insensitively and ignoring separators (``TCT_before``,
    ``tct-before`` and ``{"TCT": {"before": ...}}`` are the same field). ``timings`` and
    ``versions`` are kept as given.
    """
    flat = _flatten(raw)
    record: dict[str, Any] = {}
    for field, names in QC_FIELDS.items():
        value = next((flat[n] for n in names if n in flat and not isinstance(flat[n], dict)),
                     None)
        record[field] = value
    for extra, names in (("timings", ("timings", "timing")),
                         ("versions", ("versions", "software"))):
        value = next((v for k, v in raw.items() if _norm(k) in names), None)
        record[extra] = value if isinstance(value, dict) else {}
    record["raw"] = raw
    return record


def load_qc(path: str | Path) -> dict[str, Any]:
    """Read and normalise a QC JSON file; raises :class:`QCRecordError` naming the file."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise QCRecordError(f"{path}: cannot read QC JSON ({err})") from None
    if not isinstance(raw, dict):
        raise QCRecordError(f"{path}: QC JSON must hold an object, not {type(raw).__name__}")
    return normalize_qc(raw)


def timings_text(record: dict[str, Any]) -> str | None:
    """``name: 12.3 s, ...`` from the ``timings`` entries holding numbers of seconds."""
    items = [(re.sub(r"(?i)_?seconds$", "", k), v)
             for k, v in record.get("timings", {}).items()
             if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return ", ".join(f"{k}: {v:.1f} s" for k, v in items) or None


def qc_from_summary(path: str | Path) -> dict[str, Any]:
    """Read back the QC record embedded in a summary reportlet (HTML fragment)."""
    path = Path(path)
    match = re.search(rf'<script type="application/json" class="{QC_SCRIPT_CLASS}">(.*?)</script>',
                      path.read_text(), flags=re.DOTALL)
    if match is None:
        raise QCRecordError(f"{path}: no embedded QC record ({QC_SCRIPT_CLASS})")
    try:
        raw = json.loads(match.group(1).replace("<\\/", "</"))
    except json.JSONDecodeError as err:
        raise QCRecordError(f"{path}: embedded QC record is not valid JSON ({err})") from None
    return normalize_qc(raw)
