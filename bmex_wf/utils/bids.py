"""BIDS input handling: image discovery with pybids and the age of each scan.

The age follows NiBabies' rules: the session's ``scans.tsv`` row of the image, then the
subject's ``sessions.tsv`` row of the session, then the dataset's ``participants.tsv`` row of
the subject. Columns ``age_weeks``, ``age_months``, ``age_years`` or ``age`` (units from the
JSON sidecar of the table, or written beside the number, as in ``"6 years"``) are read, and
``gestational_weeks`` marks an in-utero (fetal) scan. Only the standard locations count.
"""

from __future__ import annotations

import csv
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

LOGGER = logging.getLogger("bmex_wf.bids")

#: Months per week (release rule: weeks x 0.230137).
MONTHS_PER_WEEK = 0.230137
#: Term age in gestational weeks; an in-utero age is stored as months before term.
TERM_WEEKS = 40.0
#: Age columns, in the order they are looked for.
AGE_COLUMNS = ("age_weeks", "age_months", "age_years", "age")
#: Contrasts processed by bmex-wf.
CONTRASTS = ("T1w", "T2w")

_UNITS = {
    "week": "weeks", "weeks": "weeks", "wk": "weeks", "wks": "weeks", "w": "weeks",
    "month": "months", "months": "months", "mo": "months", "m": "months",
    "year": "years", "years": "years", "yr": "years", "yrs": "years", "y": "years",
    "gestational_weeks": "gestational_weeks", "gestational_week": "gestational_weeks",
    "gestational weeks": "gestational_weeks", "gw": "gestational_weeks",
    "ga_weeks": "gestational_weeks",
}
_VALUE = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*([A-Za-z_ ]*?)\s*$")
_NIFTI = re.compile(r"\.nii(\.gz)?$")


class AgeError(ValueError):
    """No usable age for an image (the message says how to supply one)."""


@dataclass(frozen=True)
class AgeInfo:
    """Age of one scan.

    Attributes
    ----------
    months : float
        Age in months; for an in-utero scan, months before term (negative).
    fetal : bool
        Whether the scan is in utero.
    source : str
        Where the age was read, for logs, sidecars and reports.
    warnings : tuple of str
        Problems met on the way (ignored files, mismatched rows).
    """

    months: float
    fetal: bool
    source: str
    warnings: tuple = field(default=())

    @property
    def workflow_months(self) -> float:
        """The age handed to ``init_bmex_wf``: fetal scans are always below -0.5 months."""
        return min(self.months, -1.0) if self.fetal else self.months


def normalize_unit(unit: str | None) -> str | None:
    """Canonical unit name (``weeks``, ``months``, ``years``, ``gestational_weeks``)."""
    if unit is None:
        return None
    key = unit.strip().lower()
    if not key:
        return None
    if key not in _UNITS:
        raise ValueError(f"unknown age unit {unit!r}; use weeks, months, years or gestational_weeks")
    return _UNITS[key]


def parse_age_value(text) -> tuple[float, str | None] | None:
    """Number and optional unit of an age cell (``"6 "``, ``"6 years"``); ``None`` if empty.

    >>> parse_age_value("6 years "), parse_age_value("23"), parse_age_value("n/a")
    ((6.0, 'years'), (23.0, None), None)
    """
    if text is None:
        return None
    value = str(text).strip()
    if value.lower() in ("", "n/a", "na", "nan"):
        return None
    match = _VALUE.match(value)
    if not match:
        raise ValueError(f"age {text!r} is not a number (optionally followed by a unit)")
    return float(match.group(1)), normalize_unit(match.group(2))


def to_months(value: float, unit: str) -> tuple[float, bool]:
    """Convert an age to months; returns ``(months, fetal)``.

    Gestational weeks mark an in-utero scan; its age becomes months before term (negative).

    >>> to_months(6, "years"), to_months(25, "gestational_weeks")[1]
    ((72.0, False), True)
    """
    unit = normalize_unit(unit)
    if unit == "years":
        return value * 12.0, False
    if unit == "months":
        return float(value), False
    if unit == "weeks":
        return value * MONTHS_PER_WEEK, False
    if unit == "gestational_weeks":
        return (value - TERM_WEEKS) * MONTHS_PER_WEEK, True
    raise ValueError("age unit missing; use weeks, months, years or gestational_weeks")


def read_tsv(path: Path) -> list[dict[str, str]]:
    """Rows of a BIDS TSV file as dictionaries (keys and values stripped)."""
    with open(path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        rows = []
        for row in reader:
            rows.append({(k or "").strip(): (v or "").strip() for k, v in row.items()})
    return rows


def _sidecar_unit(table: Path, column: str) -> str | None:
    sidecar = table.with_suffix(".json")
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise AgeError(f"{sidecar}: cannot read JSON ({exc})") from None
    desc = meta.get(column) if isinstance(meta, dict) else None
    units = desc.get("Units") if isinstance(desc, dict) else None
    return normalize_unit(units) if isinstance(units, str) else None


def _age_from_row(row: dict, table: Path) -> tuple[float, bool, str] | None:
    """``(months, fetal, column)`` from a table row, or ``None`` if the row has no age."""
    for column in AGE_COLUMNS:
        if column not in row:
            continue
        try:
            parsed = parse_age_value(row[column])
        except ValueError as exc:
            raise AgeError(f"{table}: column {column}: {exc}") from None
        if parsed is None:
            continue
        number, cell_unit = parsed
        column_unit = {"age_weeks": "weeks", "age_months": "months", "age_years": "years"}.get(column)
        try:
            unit = column_unit or _sidecar_unit(table, column)
        except ValueError as exc:
            raise AgeError(f"{table.with_suffix('.json')}: {exc}") from None
        if cell_unit and unit and cell_unit != unit:
            LOGGER.warning("%s: age %r says %s but the column's unit is %s; using %s",
                           table, row[column], cell_unit, unit, cell_unit)
        unit = cell_unit or unit
        if unit is None:
            raise AgeError(
                f"{table}: column '{column}' has no units; add {{\"{column}\": {{\"Units\": "
                f"\"months\"}}}} to {table.with_suffix('.json').name} or use age_months")
        months, fetal = to_months(number, unit)
        return months, fetal, column
    return None


def _same_file(name: str, image: Path, session_dir: Path) -> bool:
    """Whether a scans.tsv ``filename`` names ``image`` (path from the session folder)."""
    name = name.strip().replace("\\", "/")
    rel = image.relative_to(session_dir).as_posix() if image.is_relative_to(session_dir) else None
    if rel is not None and name == rel:
        return True
    # Rows written without the datatype folder ("sub-01_T1w.nii.gz") still name the file.
    return "/" not in name and name == image.name


def _scans_age(image: Path, sub: str, ses: str | None, session_dir: Path, notes: list[str]):
    stem = f"sub-{sub}" + (f"_ses-{ses}" if ses else "")
    table = session_dir / f"{stem}_scans.tsv"
    if not table.is_file():
        return None
    rows = read_tsv(table)
    if rows and "filename" not in rows[0]:
        notes.append(f"{table} has no 'filename' column; ignored")
        return None
    matching = [r for r in rows if _same_file(r.get("filename", ""), image, session_dir)]
    if len(matching) > 1:
        raise AgeError(f"{table}: {len(matching)} rows name {image.name}; keep one")
    if matching:
        found = _age_from_row(matching[0], table)
        return found and (*found, f"{table} (row {matching[0]['filename']})")
    if len(rows) == 1:
        found = _age_from_row(rows[0], table)
        if found:
            notes.append(f"{table} has a single row naming {rows[0]['filename']}, not "
                         f"{image.name}; its age is used for this session")
            return (*found, f"{table} (single row naming another file: {rows[0]['filename']})")
        return None
    if rows:
        notes.append(f"{table} has no row for {image.name}; ignored")
    return None


def _sessions_age(sub: str, ses: str | None, subject_dir: Path, notes: list[str]):
    if not ses:
        return None
    table = subject_dir / f"sub-{sub}_sessions.tsv"
    if not table.is_file():
        return None
    rows = [r for r in read_tsv(table) if r.get("session_id", "").removeprefix("ses-") == ses]
    if not rows:
        notes.append(f"{table} has no row for ses-{ses}; ignored")
        return None
    found = _age_from_row(rows[0], table)
    return found and (*found, f"{table} (row ses-{ses})")


def _participants_age(sub: str, bids_dir: Path, notes: list[str]):
    table = bids_dir / "participants.tsv"
    if not table.is_file():
        return None
    rows = [r for r in read_tsv(table) if r.get("participant_id", "").removeprefix("sub-") == sub]
    if not rows:
        notes.append(f"{table} has no row for sub-{sub}; ignored")
        return None
    found = _age_from_row(rows[0], table)
    return found and (*found, f"{table} (row sub-{sub})")


def _nonstandard_tables(subject_dir: Path, standard: set[Path]) -> list[Path]:
    tables = list(subject_dir.rglob("*_scans.tsv")) + list(subject_dir.rglob("*_sessions.tsv"))
    return sorted(p for p in tables if p not in standard)


def image_entities(image: Path) -> tuple[str, str | None]:
    """Subject and session labels from a BIDS file name."""
    sub = re.search(r"(?:^|_)sub-([A-Za-z0-9]+)", image.name)
    ses = re.search(r"_ses-([A-Za-z0-9]+)", image.name)
    if not sub:
        raise AgeError(f"{image}: not a BIDS file name (no sub-<label>)")
    return sub.group(1), ses.group(1) if ses else None


def lookup_age(bids_dir, image) -> AgeInfo:
    """Age of ``image`` from the standard BIDS tables of ``bids_dir``.

    Parameters
    ----------
    bids_dir : path
        Root of the BIDS dataset.
    image : path
        The image (inside ``bids_dir``).

    Returns
    -------
    AgeInfo
        Age in months, fetal flag, a description of the source and the warnings met.

    Raises
    ------
    AgeError
        When no standard location gives an age (the message says how to supply one).
    """
    bids_dir, image = Path(bids_dir).absolute(), Path(image).absolute()
    sub, ses = image_entities(image)
    subject_dir = bids_dir / f"sub-{sub}"
    session_dir = subject_dir / f"ses-{ses}" if ses else subject_dir
    notes: list[str] = []
    standard = {session_dir / (f"sub-{sub}" + (f"_ses-{ses}" if ses else "") + "_scans.tsv"),
                subject_dir / f"sub-{sub}_sessions.tsv"}
    for path in _nonstandard_tables(subject_dir, standard):
        if path.parent == session_dir or path.parent.parent == session_dir or path.parent == subject_dir:
            notes.append(f"{path} is not at a standard BIDS location; ignored")
    # Scans tables of other sessions of the subject are standard but not for this image.
    found = (_scans_age(image, sub, ses, session_dir, notes)
             or _sessions_age(sub, ses, subject_dir, notes)
             or _participants_age(sub, bids_dir, notes))
    for note in notes:
        LOGGER.warning("%s: %s", image.name, note)
    if not found:
        raise AgeError(
            f"{image}: no age found in the session's scans.tsv, the subject's sessions.tsv or "
            "participants.tsv; add an 'age' column (with Units in its JSON sidecar) or "
            "'age_months' to participants.tsv, or pass --age-months")
    months, fetal, column, where = found
    source = f"{where}, column {column}".replace(f"{bids_dir}/", "")
    return AgeInfo(months=months, fetal=fetal, source=source, warnings=tuple(notes))


def age_from_override(value) -> AgeInfo:
    """``AgeInfo`` for ``--age-months`` (a number, ``fetal`` or ``adult``)."""
    if isinstance(value, str) and value.strip().lower() == "fetal":
        return AgeInfo(months=-1.0, fetal=True, source="--age-months fetal")
    if isinstance(value, str) and value.strip().lower() == "adult":
        return AgeInfo(months=240.0, fetal=False, source="--age-months adult")
    months = float(value)
    return AgeInfo(months=months, fetal=months < 0, source=f"--age-months {value}")


def load_bids_filters(path) -> dict:
    """Read a ``--bids-filter-file`` (JSON: ``{"t1w": {...}, "t2w": {...}}``)."""
    path = Path(path)
    try:
        filters = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(filters, dict) or any(not isinstance(v, dict) for v in filters.values()):
        raise ValueError(f"{path}: expected an object like {{\"t1w\": {{\"acquisition\": \"mprage\"}}}}")
    unknown = set(filters) - {"t1w", "t2w"}
    if unknown:
        raise ValueError(f"{path}: unknown query {sorted(unknown)}; use 't1w' and/or 't2w'")
    return filters


def _layout(bids_dir, validate: bool):
    from bids import BIDSLayout

    return BIDSLayout(str(bids_dir), validate=validate)


def find_images(bids_dir, participant_label=None, session_label=None, bids_filters=None,
                layout=None) -> list[dict]:
    """Every T1w and T2w image of the dataset, filters honoured.

    Returns
    -------
    list of dict
        ``{"path", "contrast", "subject", "session"}`` per image, sorted by path.
    """
    layout = layout or _layout(bids_dir, validate=False)
    filters = bids_filters or {}
    images = []
    for contrast in CONTRASTS:
        query = {"datatype": "anat", "suffix": contrast, "extension": [".nii", ".nii.gz"],
                 "return_type": "object"}
        if participant_label:
            query["subject"] = [label.removeprefix("sub-") for label in participant_label]
        if session_label:
            query["session"] = [label.removeprefix("ses-") for label in session_label]
        query.update(filters.get(contrast.lower(), {}))
        for bids_file in layout.get(**query):
            ents = bids_file.get_entities()
            images.append({"path": Path(bids_file.path), "contrast": contrast,
                           "subject": ents.get("subject"), "session": ents.get("session")})
    return sorted(images, key=lambda item: str(item["path"]))


def validation_warnings(bids_dir, layout=None) -> list[str]:
    """Problems of the input dataset (missing description, non-BIDS files), as warnings."""
    from bids import BIDSValidator

    bids_dir = Path(bids_dir)
    warnings = []
    desc = bids_dir / "dataset_description.json"
    if not desc.is_file():
        warnings.append(f"{desc} is missing")
    validator = BIDSValidator()
    for path in sorted(bids_dir.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.parts):
            rel = "/" + path.relative_to(bids_dir).as_posix()
            if rel.startswith(("/derivatives/", "/sourcedata/")):
                continue
            if not validator.is_bids(rel):
                warnings.append(f"{rel} is not a valid BIDS file name or location")
    return warnings


def find_precomputed_mask(derivatives_dirs, image: Path, contrast: str) -> Path | None:
    """A ``desc-brain_mask`` for ``image`` in existing derivatives folders, if any."""
    src = _NIFTI.sub("", image.name)
    prefix = src[: -len(contrast)] if src.endswith(contrast) else src + "_"
    for folder in derivatives_dirs or ():
        for candidate in sorted(Path(folder).rglob(f"{prefix}*desc-brain_mask.nii*")):
            return candidate
    return None
