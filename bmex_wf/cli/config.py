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
from ..documents import read_document

_PATHS = ("bids_dir", "output_dir", "work_dir", "models_dir", "use_plugin")


#: Field metadata naming the ``config.toml`` section a :class:`RunConfig` field is saved in.
EXECUTION, WORKFLOW, NIPYPE = ({"section": name} for name in ("execution", "workflow", "nipype"))


@dataclass
class RunConfig:
    """Everything a participant-level run needs, resolved (no ``auto`` left but ``device``)."""

    bids_dir: Path | None = field(default=None, metadata=EXECUTION)
    output_dir: Path | None = field(default=None, metadata=EXECUTION)
    work_dir: Path | None = field(default=None, metadata=EXECUTION)
    analysis_level: str = field(default="participant", metadata=EXECUTION)
    participant_label: list = field(default_factory=list, metadata=EXECUTION)
    session_label: list = field(default_factory=list, metadata=EXECUTION)
    bids_filters: dict = field(default_factory=dict, metadata=EXECUTION)
    derivatives: list = field(default_factory=list, metadata=EXECUTION)
    skip_bids_validation: bool = field(default=False, metadata=EXECUTION)
    reports_only: bool = field(default=False, metadata=EXECUTION)
    boilerplate_only: bool = field(default=False, metadata=EXECUTION)
    write_graph: bool = field(default=False, metadata=EXECUTION)
    clean_workdir: bool = field(default=False, metadata=EXECUTION)
    write_provenance: bool = field(default=False, metadata=EXECUTION)
    verbose: int = field(default=0, metadata=EXECUTION)
    models_dir: Path | None = field(default=None, metadata=EXECUTION)
    device: str = field(default="auto", metadata=WORKFLOW)
    use_gpu: bool = field(default=False, metadata=WORKFLOW)
    precision: str = field(default="auto", metadata=WORKFLOW)
    tiling: str = field(default="fast", metadata=WORKFLOW)
    brain_mask_source: str = field(default="auto", metadata=WORKFLOW)
    age_months: str | None = field(default=None, metadata=WORKFLOW)
    output_resolution: str = field(default="auto", metadata=WORKFLOW)
    output_spaces: list = field(default_factory=list, metadata=WORKFLOW)
    sloppy: bool = field(default=False, metadata=WORKFLOW)
    nprocs: int | None = field(default=None, metadata=NIPYPE)
    omp_nthreads: int | None = field(default=None, metadata=NIPYPE)
    mem_gb: float | None = field(default=None, metadata=NIPYPE)
    use_plugin: Path | None = field(default=None, metadata=NIPYPE)
    plugin: str = field(default="MultiProc", metadata=NIPYPE)
    plugin_args: dict = field(default_factory=dict, metadata=NIPYPE)
    stop_on_first_crash: bool = field(default=False, metadata=NIPYPE)
    resource_monitor: bool = field(default=False, metadata=NIPYPE)
    #: Run-time only (never saved): take over a work-directory lock left by another host.
    force_unlock: bool = False
    run_uuid: str = field(default_factory=lambda: f"{datetime.now(UTC):%Y%m%d-%H%M%S}_{uuid.uuid4()}", metadata=EXECUTION)
    version: str = field(default=__version__, metadata=EXECUTION)

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
    data = read_document(path, toml.loads, (toml.TomlDecodeError,), "config.toml")
    names = {f.name for f in dataclasses.fields(RunConfig)}
    flat = {}
    for section in SECTIONS:
        for key, value in (data.get(section) or {}).items():
            if key not in names:
                raise ValueError(f"{path}: unknown setting [{section}] {key}")
            flat[key] = Path(value) if key in _PATHS and value is not None else value
    return flat


#: Sections of config.toml and the fields each holds, read off the field declarations.
SECTIONS = {section: tuple(f.name for f in dataclasses.fields(RunConfig)
                           if f.metadata.get("section") == section)
            for section in ("execution", "workflow", "nipype")}
