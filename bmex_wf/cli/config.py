"""Run configuration of the BIDS App, saved as ``config.toml`` in the work directory.

The configuration is a plain dataclass built once from the command line; only the top-level
code reads it (workflow factories take arguments). It is written to
``<work_dir>/config.toml`` before the run and can be reloaded with ``--config-file``.
"""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import toml

from .. import __version__

#: Sections of config.toml and the fields each holds.
SECTIONS = {
    "execution": ("bids_dir", "output_dir", "work_dir", "analysis_level", "participant_label",
                  "session_label", "bids_filters", "derivatives", "skip_bids_validation",
                  "reports_only", "boilerplate_only", "write_graph", "clean_workdir",
                  "write_provenance", "verbose", "run_uuid", "version", "models_dir"),
    "workflow": ("device", "use_gpu", "precision", "tiling", "brain_mask_source", "age_months",
                 "output_spaces", "sloppy"),
    "nipype": ("nprocs", "omp_nthreads", "mem_gb", "use_plugin", "plugin", "plugin_args",
               "stop_on_first_crash", "resource_monitor"),
}
_PATHS = ("bids_dir", "output_dir", "work_dir", "models_dir", "use_plugin")


@dataclass
class RunConfig:
    """Everything a participant-level run needs, resolved (no ``auto`` left but ``device``)."""

    bids_dir: Path | None
    output_dir: Path
    work_dir: Path | None = None
    analysis_level: str = "participant"
    participant_label: list = field(default_factory=list)
    session_label: list = field(default_factory=list)
    bids_filters: dict = field(default_factory=dict)
    derivatives: list = field(default_factory=list)
    skip_bids_validation: bool = False
    reports_only: bool = False
    boilerplate_only: bool = False
    write_graph: bool = False
    clean_workdir: bool = False
    write_provenance: bool = False
    verbose: int = 0
    models_dir: Path | None = None
    device: str = "auto"
    use_gpu: bool = False
    precision: str = "auto"
    tiling: str = "fast"
    brain_mask_source: str = "auto"
    age_months: str | None = None
    output_spaces: list = field(default_factory=list)
    sloppy: bool = False
    nprocs: int | None = None
    omp_nthreads: int | None = None
    mem_gb: float | None = None
    use_plugin: Path | None = None
    plugin: str = "MultiProc"
    plugin_args: dict = field(default_factory=dict)
    stop_on_first_crash: bool = False
    resource_monitor: bool = False
    run_uuid: str = field(
        default_factory=lambda: f"{datetime.now(UTC):%Y%m%d-%H%M%S}_{uuid.uuid4()}")
    version: str = __version__

    @classmethod
    def from_namespace(cls, opts) -> RunConfig:
        """Build from parsed arguments (unknown attributes ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in vars(opts).items() if k in names and v is not None}
        for key in ("participant_label", "session_label", "derivatives", "output_spaces"):
            values[key] = [str(v) for v in values.get(key) or []]
        return cls(**values)

    def to_dict(self) -> dict:
        """Nested ``{section: {key: value}}`` with paths as strings and ``None`` dropped."""
        out = {}
        for section, keys in SECTIONS.items():
            items = {}
            for key in keys:
                value = getattr(self, key)
                if value is None or value == {} and key in ("bids_filters", "plugin_args"):
                    continue
                items[key] = str(value) if isinstance(value, Path) else value
            out[section] = items
        return out

    def write(self, path=None) -> Path:
        """Write ``config.toml`` (default: in the work directory); returns its path."""
        from ..bids.derivatives import atomic_write_text

        path = Path(path) if path else Path(self.work_dir) / "config.toml"
        return atomic_write_text(path, toml.dumps(self.to_dict()))

    @classmethod
    def load(cls, path) -> RunConfig:
        """Read a ``config.toml`` written by :meth:`write`."""
        return cls(**load_settings(path))


def load_settings(path) -> dict:
    """Flat ``{field: value}`` from a ``config.toml`` (paths back to ``Path``)."""
    path = Path(path)
    try:
        data = toml.loads(path.read_text())
    except (OSError, toml.TomlDecodeError) as exc:
        raise ValueError(f"{path}: not a readable config.toml ({exc})") from None
    names = {f.name for f in dataclasses.fields(RunConfig)}
    flat = {}
    for section in SECTIONS:
        for key, value in (data.get(section) or {}).items():
            if key not in names:
                raise ValueError(f"{path}: unknown setting [{section}] {key}")
            flat[key] = Path(value) if key in _PATHS and value is not None else value
    return flat
