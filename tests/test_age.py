"""Age in months -> age group (spec 8.2)."""

import pytest

from bmex_wf.age import age_group


@pytest.mark.parametrize(
    "months, group",
    [(0, "Month0"), (1, "Month0"), (1.4, "Month0"), (2, "Month3"), (4, "Month3"), (5, "Month6"),
     (6, "Month6"), (7, "Month9"), (9, "Month9"), (10, "Month12"), (14, "Month12"),
     (15, "Month18"), (20, "Month18"), (21, "Month24"), (23, "Month24"), (600, "Month24"),
     (-1, "Fetal"), (-3.2, "Fetal"), ("adult", "Month24"), ("fetal", "Fetal"), (" Fetal ", "Fetal"),
     ("11", "Month12")],
)
def test_age_groups(months, group):
    assert age_group(months) == group


@pytest.mark.parametrize("bad", ["six", float("nan"), 5000, None, True])
def test_bad_ages(bad):
    with pytest.raises(ValueError, match="age"):
        age_group(bad)
