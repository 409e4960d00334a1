"""Age in months -> BME-X age group (spec 8.2), with the fetal group working."""

from __future__ import annotations

import math

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
