"""Age of a scan: units, conversion to months, and the BME-X age group (spec 8.2, fetal included)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

#: Age groups in order; each served by one model and one template per contrast.
AGE_GROUPS = ("Fetal", "Month0", "Month3", "Month6", "Month9", "Month12", "Month18", "Month24")

# (lowest whole month, group), checked from the top.
_BINS = ((21, "Month24"), (15, "Month18"), (10, "Month12"), (7, "Month9"),
         (5, "Month6"), (2, "Month3"), (0, "Month0"))

#: Oldest age accepted, in months (120 years).
MAX_AGE_MONTHS = 1440


def age_group(age_months: float | str) -> str:
    """Return the age group for an age in months, or the words ``adult``/``fetal``.

    The age is rounded to whole months first; negative ages (in utero) map to
    ``Fetal``.

    >>> age_group(23), age_group(1.4), age_group(-3), age_group("adult")
    ('Month24', 'Month0', 'Fetal', 'Month24')
    """
    if isinstance(age_months, str):
        word = age_months.strip().lower()
        if word == "adult":
            return "Month24"
        if word == "fetal":
            return "Fetal"
        try:
            age_months = float(word)
        except ValueError:
            raise ValueError(f"age {age_months!r} is neither a number of months nor 'adult'/'fetal'") from None
    if age_months is None or isinstance(age_months, bool) or not math.isfinite(float(age_months)):
        raise ValueError(f"age must be a finite number of months, got {age_months!r}")
    months = round(float(age_months))
    if months > MAX_AGE_MONTHS:
        raise ValueError(f"age {age_months} months is out of range (at most {MAX_AGE_MONTHS})")
    if months < 0:
        return "Fetal"
    return next(group for low, group in _BINS if months >= low)


#: Months per week (release rule: weeks x 0.230137).
MONTHS_PER_WEEK = 0.230137


#: Term age in gestational weeks; an in-utero age is stored as months before term.
TERM_WEEKS = 40.0


_UNITS = {
    "week": "weeks", "weeks": "weeks", "wk": "weeks", "wks": "weeks", "w": "weeks",
    "month": "months", "months": "months", "mo": "months", "m": "months",
    "year": "years", "years": "years", "yr": "years", "yrs": "years", "y": "years",
    "gestational_weeks": "gestational_weeks", "gestational_week": "gestational_weeks",
    "gestational weeks": "gestational_weeks", "gw": "gestational_weeks",
    "ga_weeks": "gestational_weeks",
}


_VALUE = re.compile(r"^\s*([-+]?\d+(?:\.\d*)?|[-+]?\.\d+)\s*([A-Za-z_ ]*?)\s*$")


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


def age_from_override(value) -> AgeInfo:
    """``AgeInfo`` for ``--age-months`` (a number, ``fetal`` or ``adult``)."""
    if isinstance(value, str) and value.strip().lower() == "fetal":
        return AgeInfo(months=-1.0, fetal=True, source="--age-months fetal")
    if isinstance(value, str) and value.strip().lower() == "adult":
        return AgeInfo(months=240.0, fetal=False, source="--age-months adult")
    months = float(value)
    return AgeInfo(months=months, fetal=months < 0, source=f"--age-months {value}")
