"""Standard output spaces: ``--output-spaces`` values, cohorts by age, TemplateFlow files.

An output space is a TemplateFlow template identifier with optional modifiers, as in
fMRIPrep: ``MNI152NLin2009cAsym``, ``MNIInfant:cohort-1``, ``UNCInfant:cohort-2:res-1``.
Templates come only through the TemplateFlow client (``templateflow.api``), which reads
``TEMPLATEFLOW_HOME``; files it cannot fetch raise :class:`TemplateFetchError`, one line
saying how to pre-fetch them.

Cohort from age (infant templates named without a cohort), as NiBabies does: the age in
months is rounded to a whole month, and the first cohort whose upper age bound is not below
it is chosen. Upper bounds (months):

- ``MNIInfant``: 2, 5, 8, 11, 14, 17, 21, 27, 33, 44, 60 (cohorts 1 to 11);
- ``UNCInfant``: 8, 12, 24 (cohorts 1 to 3).

Fetal images get no output space unless a fetal template is named (an identifier containing
``fetal``, any case); older images than a template's last cohort skip that space. Both are
logged.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..labels import TISSUE_NAMES

LOGGER = logging.getLogger("bmex_wf.templates")

#: Upper age bound (months) of each cohort, in cohort order (NiBabies' rule).
COHORT_AGES = {
    "MNIInfant": (2, 5, 8, 11, 14, 17, 21, 27, 33, 44, 60),
    "UNCInfant": (8, 12, 24),
}
_NAME = re.compile(r"^[A-Za-z0-9]+$")
_MODIFIER = re.compile(r"^(cohort|res)-([A-Za-z0-9]+)$")


class OutputSpaceError(ValueError):
    """An ``--output-spaces`` value that is malformed or names no known template."""


class TemplateFetchError(ValueError):
    """Template files that TemplateFlow could not provide (offline and not cached)."""


@dataclass(frozen=True)
class OutputSpace:
    """A TemplateFlow template with an optional cohort and resolution.

    Attributes
    ----------
    name : str
        TemplateFlow identifier (``MNI152NLin2009cAsym``, ``MNIInfant``, ...).
    cohort : str or None
        Template cohort; ``None`` lets :func:`resolve_space` choose it from the age.
    resolution : int or None
        TemplateFlow ``res`` index; ``None`` means the template's finest (index 1) and keeps
        ``res`` out of the output names.
    """

    name: str
    cohort: str | None = None
    resolution: int | None = None

    def __str__(self) -> str:
        mods = [f"cohort-{self.cohort}"] * (self.cohort is not None) + \
               [f"res-{self.resolution}"] * (self.resolution is not None)
        return ":".join([self.name, *mods])

    @property
    def entities(self) -> str:
        """BIDS entities of files in this space: ``space-<name>[_cohort-<c>][_res-<r>]``."""
        text = f"space-{self.name}"
        if self.cohort is not None:
            text += f"_cohort-{self.cohort}"
        if self.resolution is not None:
            text += f"_res-{self.resolution}"
        return text

    @property
    def label(self) -> str:
        """Template name with its cohort (``MNIInfant_cohort-1``), for ``to-``/``from-`` names."""
        return self.name + (f"_cohort-{self.cohort}" if self.cohort is not None else "")


@dataclass(frozen=True)
class TemplateFiles:
    """The files of one template that registration and the report use.

    Attributes
    ----------
    space : OutputSpace
        The space, cohort resolved.
    image : Path
        Template image (``T1w`` or ``T2w``).
    contrast : str
        Contrast of ``image`` (may differ from the subject's when the template lacks it).
    mask : Path
        Template brain mask.
    probsegs : dict
        ``{"CSF"|"GM"|"WM": Path}`` tissue probability maps the template provides.
    dseg : Path or None
        Template tissue labels, when provided.
    """

    space: OutputSpace
    image: Path
    contrast: str
    mask: Path
    probsegs: dict = field(default_factory=dict)
    dseg: Path | None = None


# --------------------------------------------------------------------------- parsing
def parse_output_space(value: str) -> OutputSpace:
    """Parse one ``--output-spaces`` value (syntax only).

    >>> parse_output_space("MNIInfant:cohort-1:res-2")
    OutputSpace(name='MNIInfant', cohort='1', resolution=2)
    >>> str(parse_output_space("MNI152NLin2009cAsym"))
    'MNI152NLin2009cAsym'
    """
    name, *mods = value.strip().split(":")
    if not _NAME.match(name):
        raise OutputSpaceError(f"invalid output space {value!r}: the template name must be "
                               "letters and digits (e.g. MNI152NLin2009cAsym)")
    spec: dict = {}
    for mod in mods:
        found = _MODIFIER.match(mod)
        if not found or found.group(1) in spec:
            raise OutputSpaceError(f"invalid output space {value!r}: modifiers are "
                                   "':cohort-<label>' and ':res-<number>', each at most once")
        spec[found.group(1)] = found.group(2)
    res = spec.get("res")
    if res is not None and not res.isdigit():
        raise OutputSpaceError(f"invalid output space {value!r}: res-{res} is not a number")
    return OutputSpace(name, spec.get("cohort"), int(res) if res is not None else None)


def templateflow_home() -> Path:
    """Root of the TemplateFlow cache the client uses (``TEMPLATEFLOW_HOME``)."""
    from templateflow import conf

    return Path(conf.TF_HOME)


def template_description(name: str) -> dict:
    """``template_description.json`` of a template in the TemplateFlow home."""
    root = templateflow_home()
    path = root / f"tpl-{name}" / "template_description.json"
    if not path.parent.is_dir():
        known = sorted(p.name[4:] for p in root.glob("tpl-*") if p.is_dir())
        raise OutputSpaceError(f"unknown TemplateFlow template {name!r} (not in "
                               f"TEMPLATEFLOW_HOME={root}); known: {', '.join(known) or 'none'}")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def check_output_space(space: OutputSpace) -> OutputSpace:
    """Check a parsed space against the TemplateFlow home: template known, cohort valid.

    A template with cohorts may omit the cohort only if :data:`COHORT_AGES` has a rule for it.
    """
    cohorts = sorted((template_description(space.name).get("cohort") or {}), key=str)
    if space.cohort is not None and not cohorts:
        raise OutputSpaceError(f"output space {space}: template {space.name} has no cohorts")
    if space.cohort is not None and space.cohort not in cohorts:
        raise OutputSpaceError(f"output space {space}: template {space.name} has no cohort "
                               f"{space.cohort} (cohorts: {', '.join(cohorts)})")
    if space.cohort is None and cohorts and space.name not in COHORT_AGES:
        raise OutputSpaceError(f"output space {space}: template {space.name} needs a cohort "
                               f"(':cohort-<label>', one of {', '.join(cohorts)})")
    return space


def parse_output_spaces(values) -> list[OutputSpace]:
    """Parse and check ``--output-spaces`` values, duplicates dropped, order kept."""
    spaces: list[OutputSpace] = []
    for value in values or ():
        space = check_output_space(parse_output_space(value))
        if space not in spaces:
            spaces.append(space)
    return spaces


# --------------------------------------------------------------------------- per image
def is_fetal_template(name: str) -> bool:
    """Whether a template is meant for fetal images (its identifier says ``fetal``)."""
    return "fetal" in name.lower()


def cohort_from_age(template: str, months: float) -> str:
    """Cohort of an infant template for an age in months (NiBabies' rule).

    >>> cohort_from_age("MNIInfant", 0.4), cohort_from_age("MNIInfant", 23)
    ('1', '8')
    >>> cohort_from_age("UNCInfant", 12.4)
    '2'
    """
    bounds = COHORT_AGES.get(template)
    if bounds is None:
        raise ValueError(f"template {template} has no cohort-by-age rule; give "
                         f"'{template}:cohort-<label>'")
    age = round(months)
    for cohort, upper in enumerate(bounds, start=1):
        if age <= upper:
            return str(cohort)
    raise ValueError(f"age {months:.1f} months is beyond the oldest {template} cohort "
                     f"({bounds[-1]} months)")


def resolve_space(space: OutputSpace, age_months: float, *, fetal: bool,
                  source: str = "image") -> OutputSpace | None:
    """The space for one image (cohort chosen from the age), or ``None`` to skip it (logged).

    Parameters
    ----------
    space : OutputSpace
        A checked output space.
    age_months : float
        Age at scan (negative: in utero).
    fetal : bool
        The image is fetal.
    source : str
        Name of the image, for the log messages.
    """
    if fetal and not is_fetal_template(space.name):
        LOGGER.warning("%s: fetal image, output space %s skipped (name a fetal template in "
                       "--output-spaces to register fetal images)", source, space)
        return None
    if space.cohort is None and space.name in COHORT_AGES:
        try:
            cohort = cohort_from_age(space.name, age_months)
        except ValueError as exc:
            LOGGER.warning("%s: output space %s skipped: %s", source, space, exc)
            return None
        LOGGER.info("%s: output space %s uses cohort %s (age %.1f months)", source, space.name,
                    cohort, age_months)
        return replace(space, cohort=cohort)
    return space


# --------------------------------------------------------------------------- fetching
def _prefetch_hint(space: OutputSpace) -> str:
    args = [repr(space.name)]
    if space.cohort is not None:
        args.append(f"cohort={space.cohort}")
    return (f"set TEMPLATEFLOW_HOME to a shared folder on a machine with network access and run "
            f"python -c \"from templateflow.api import get; get({', '.join(args)})\", then "
            f"run bmex-wf with the same TEMPLATEFLOW_HOME")


def _get(space: OutputSpace, **query) -> Path | None:
    """One template file through ``templateflow.api.get``; ``None`` when none is listed.

    Raises
    ------
    TemplateFetchError
        The file is listed but neither cached nor downloadable.
    """
    from templateflow import api

    if space.cohort is not None:
        query["cohort"] = int(space.cohort) if space.cohort.isdigit() else space.cohort
    res = space.resolution or 1
    for resolution in (res, None) if space.resolution is None else (res,):
        listed = api.ls(space.name, resolution=resolution, extension=".nii.gz", **query)
        if not listed:
            continue
        try:
            found = api.get(space.name, resolution=resolution, extension=".nii.gz", **query)
        except (RuntimeError, OSError) as exc:
            raise TemplateFetchError(
                f"TemplateFlow template {space} is not available: {Path(listed[0]).name} is "
                f"neither cached in {templateflow_home()} nor downloadable "
                f"({type(exc).__name__}); to pre-fetch it, {_prefetch_hint(space)}") from None
        path = Path(found[0] if isinstance(found, list) else found)
        if not path.is_file() or path.stat().st_size == 0:
            raise TemplateFetchError(
                f"TemplateFlow template {space}: {path} is an empty placeholder (offline "
                f"cache); to pre-fetch it, {_prefetch_hint(space)}")
        return path
    return None


def _optional(space: OutputSpace, **query) -> Path | None:
    """A file only the report needs: missing or not fetchable gives ``None`` (logged)."""
    try:
        return _get(space, **query)
    except TemplateFetchError as exc:
        LOGGER.warning("%s (not needed for registration)", exc)
        return None


def fetch_template(space: OutputSpace, contrast: str) -> TemplateFiles:
    """Fetch the image (``contrast`` if the template has it), brain mask, probsegs and dseg.

    Raises
    ------
    TemplateFetchError
        The template image or brain mask is missing, or neither cached nor downloadable.
    """
    other = "T2w" if contrast == "T1w" else "T1w"
    image, used = _get(space, suffix=contrast, desc=None), contrast
    if image is None:
        image, used = _get(space, suffix=other, desc=None), other
        LOGGER.info("Template %s has no %s image: registering to its %s image (mutual "
                    "information)", space, contrast, other)
    mask = (_get(space, suffix="mask", desc="brain", label=None)
            or _get(space, suffix="mask", label="brain", desc=None))
    if image is None or mask is None:
        raise TemplateFetchError(f"TemplateFlow template {space} has no "
                                 f"{'T1w/T2w image' if image is None else 'brain mask'} in "
                                 f"{templateflow_home()} (check the resolution and cohort)")
    probsegs = {}
    for tissue in TISSUE_NAMES:
        path = _optional(space, suffix="probseg", label=tissue, desc=None)
        if path is not None:
            probsegs[tissue] = path
    dseg = _optional(space, suffix="dseg", desc=None, atlas=None)
    return TemplateFiles(space=space, image=image, contrast=used, mask=mask,
                         probsegs=probsegs, dseg=dseg)


# --------------------------------------------------------------------------- names
def space_output_names(source_name: str, contrast: str, space: OutputSpace) -> dict[str, str]:
    """Derivative names of one image's outputs in ``space``.

    >>> names = space_output_names("sub-01_ses-1_T1w.nii.gz", "T1w",
    ...                            OutputSpace("MNIInfant", "2"))
    >>> names["enhanced"], names["xfm_inverse"]
    ('sub-01_ses-1_space-MNIInfant_cohort-2_desc-enhanced_T1w.nii.gz', \
'sub-01_ses-1_from-MNIInfant_to-T1w_cohort-2_mode-image_xfm.h5')
    """
    from ..bids.derivatives import source_entities

    src = source_entities(source_name, contrast)
    cohort = f"_cohort-{space.cohort}" if space.cohort is not None else ""
    return {
        "enhanced": f"{src}_{space.entities}_desc-enhanced_{contrast}.nii.gz",
        "dseg": f"{src}_{space.entities}_dseg.nii.gz",
        "xfm_forward": f"{src}_from-{contrast}_to-{space.name}{cohort}_mode-image_xfm.h5",
        "xfm_inverse": f"{src}_from-{space.name}_to-{contrast}{cohort}_mode-image_xfm.h5",
    }
