"""Where the report pieces live: bundled spec and templates, figures in the output folder."""

from __future__ import annotations

import re
from importlib.resources import files
from pathlib import Path

#: Entities read from figure file names.
_ENTITY = re.compile(r"(?:^|_)(sub|ses|acq|ce|rec|run|space|desc)-([a-zA-Z0-9]+)")


def data_file(*parts: str) -> Path:
    """A file bundled under ``bmex_wf/data``."""
    return Path(str(files("bmex_wf").joinpath("data", *parts)))


def reports_spec() -> Path:
    """The default report specification, ``bmex_wf/data/reports-spec.yml``."""
    return data_file("reports-spec.yml")


def report_template(name: str = "report.tpl") -> Path:
    """A bundled Jinja2 template of ``bmex_wf/data/reports``."""
    return data_file("reports", name)


def figures_dir(output_dir: str | Path, subject: str) -> Path:
    """``OUTPUT_DIR/sub-<label>/figures``."""
    return Path(output_dir) / f"sub-{strip_prefix(subject, 'sub-')}" / "figures"


def subject_report(output_dir: str | Path, subject: str) -> Path:
    """``OUTPUT_DIR/sub-<label>.html``."""
    return Path(output_dir) / f"sub-{strip_prefix(subject, 'sub-')}.html"


def strip_prefix(label: str, prefix: str) -> str:
    """``sub-01`` -> ``01`` (labels without the prefix are returned unchanged)."""
    return label.removeprefix(prefix)


def subjects_with_figures(output_dir: str | Path) -> list[str]:
    """Labels of the subjects that have a ``figures`` folder, sorted."""
    return sorted(p.parent.name[4:] for p in Path(output_dir).glob("sub-*/figures")
                  if p.is_dir())


def figure_entities(path: str | Path) -> dict[str, str]:
    """BIDS entities and suffix of a figure file name (``sub``, ``ses``, ..., ``suffix``)."""
    name = Path(path).name.split(".")[0]
    entities = dict(_ENTITY.findall(name))
    entities["suffix"] = name.rsplit("_", 1)[-1]
    return entities
