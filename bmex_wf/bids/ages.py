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
from pathlib import Path

from bmex_wf.age import AgeError, AgeInfo, normalize_unit, parse_age_value, to_months

LOGGER = logging.getLogger(__name__)


#: Age columns, in the order they are looked for.
AGE_COLUMNS = ("age_weeks", "age_months", "age_years", "age")


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
    return _labelled_row_age(subject_dir / f"sub-{sub}_sessions.tsv", "session_id", "ses", ses, notes)


def _participants_age(sub: str, bids_dir: Path, notes: list[str]):
    return _labelled_row_age(bids_dir / "participants.tsv", "participant_id", "sub", sub, notes)


def _labelled_row_age(table: Path, column: str, entity: str, label: str, notes: list[str]):
    """Age of the row of ``table`` whose ``column`` is ``<entity>-<label>`` (or the bare label)."""
    if not table.is_file():
        return None
    rows = [r for r in read_tsv(table) if r.get(column, "").removeprefix(f"{entity}-") == label]
    if not rows:
        notes.append(f"{table} has no row for {entity}-{label}; ignored")
        return None
    found = _age_from_row(rows[0], table)
    return found and (*found, f"{table} (row {entity}-{label})")


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
