"""Provenance records: versions, checksums and the settings of one enhancement."""

from __future__ import annotations

import datetime as _dt
import platform

from .models.registry import file_sha256


def software_versions() -> dict:
    """Versions of bmex-wf and the libraries that shape its numbers."""
    import nibabel
    import nipype
    import numpy
    import SimpleITK
    import torch

    from . import __version__

    return {
        "bmex-wf": __version__,
        "torch": torch.__version__,
        "nipype": nipype.__version__,
        "nibabel": nibabel.__version__,
        "SimpleITK": SimpleITK.Version_VersionString(),
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }


def file_record(path) -> dict:
    """Path and sha256 of one input file."""
    return {"path": str(path), "sha256": file_sha256(path)}


def utc_now() -> str:
    """The current time, ISO 8601 in UTC."""
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
