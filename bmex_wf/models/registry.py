"""Where model files live and which one serves an image (package data ``models.json``)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from ..labels import CONTRASTS

#: Environment variable naming a directory of model files.
MODELS_ENV = "BMEX_MODELS_DIR"


@dataclass(frozen=True)
class ModelEntry:
    """One checkpoint of the registry and what goes with it."""

    kind: str
    file: str
    template: str
    voxel_mm: float
    group: str | None = None
    contrast: str | None = None
    sha256: str | None = None
    template_data: str | None = None


def _registry() -> dict:
    text = resources.files("bmex_wf.data").joinpath("models.json").read_text()
    return json.loads(text)


def enhance_entries() -> list[ModelEntry]:
    """Every enhancement checkpoint of the registry, fetal first, then by age."""
    return [ModelEntry(kind="enhance", **e) for e in _registry()["enhance"]]


def skullstrip_entry() -> ModelEntry:
    """The LifespanStrip checkpoint and its intensity template."""
    return ModelEntry(kind="skullstrip", **_registry()["skullstrip"])


def enhance_entry(group: str, contrast: str) -> ModelEntry:
    """The enhancement entry for ``group`` x ``contrast``; clear error if none exists."""
    if contrast not in CONTRASTS:
        raise ValueError(f"unknown contrast {contrast!r}; expected one of {', '.join(CONTRASTS)}")
    for entry in enhance_entries():
        if entry.group == group and entry.contrast == contrast:
            return entry
    raise ValueError(f"BME-X has no {contrast} model for age group {group}")


def user_cache_dir() -> Path:
    """The per-user model cache, ``$XDG_CACHE_HOME/bmex-wf/models``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bmex-wf" / "models"


def search_dirs(models_dir=None) -> list[Path]:
    """Directories searched for model files, in order: argument, environment, user cache."""
    dirs = [Path(models_dir)] if models_dir else []
    if os.environ.get(MODELS_ENV):
        dirs.append(Path(os.environ[MODELS_ENV]))
    dirs.append(user_cache_dir())
    return dirs


def find_file(name: str, models_dir=None) -> Path | None:
    """First existing ``name`` in the search directories, or ``None``."""
    for folder in search_dirs(models_dir):
        candidate = folder / name
        if candidate.is_file():
            return candidate
    return None


def file_sha256(path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def checksum_status(entry: ModelEntry, path: Path | None) -> str:
    """``ok``, ``MISMATCH``, ``not recorded`` (no reference) or ``-`` (no file)."""
    if path is None:
        return "-"
    if not entry.sha256:
        return "not recorded"
    return "ok" if file_sha256(path) == entry.sha256 else "MISMATCH"


#: Package-data file of the compact model trained by this project.
BUILTIN_FILE = "bmex-builtin-enhance.pt"


@dataclass(frozen=True)
class ResolvedModel:
    """The checkpoint chosen for one image and why."""

    path: Path
    entry: ModelEntry
    builtin: bool


def builtin_model_path() -> Path | None:
    """Path of the shipped built-in model, or ``None`` if this install has none."""
    path = Path(str(resources.files("bmex_wf.data").joinpath(BUILTIN_FILE)))
    return path if path.is_file() else None


def official_files_present(models_dir=None) -> list[Path]:
    """Every official enhancement checkpoint found in the search directories."""
    found = (find_file(e.file, models_dir) for e in enhance_entries())
    return [p for p in found if p is not None]


def resolve_enhance_model(group: str, contrast: str, models_dir=None) -> ResolvedModel:
    """Choose the enhancement checkpoint for ``group`` x ``contrast``.

    The official file when found; the built-in model only when no official
    enhancement file is present at all (never silently mixed with official ones).
    """
    entry = enhance_entry(group, contrast)
    path = find_file(entry.file, models_dir)
    if path is not None:
        return ResolvedModel(path, entry, builtin=False)
    dirs = ", ".join(str(d) for d in search_dirs(models_dir))
    if official_files_present(models_dir):
        raise FileNotFoundError(
            f"{entry.file}: official model for {group} {contrast} not found in {dirs}, "
            "although other official models are present; add it (see 'bmex-wf models')"
        )
    builtin = builtin_model_path()
    if builtin is None:
        raise FileNotFoundError(
            f"{entry.file}: no BME-X model weights found in {dirs}, and this installation "
            "has no built-in model; see the README section 'Model weights'"
        )
    return ResolvedModel(builtin, entry, builtin=True)
