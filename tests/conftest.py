"""Shared test fixtures: paths to ../shared, small rule-weight models."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("NIPYPE_NO_ET", "1")

SHARED = Path(os.environ.get("BMEX_SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))

from .helpers import rule_network


def shared_path(*parts) -> Path:
    """Path under ../shared, skipping the test with a reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} is absent")
    return path


def real_crop(tmp_path, subject="0002", size=100) -> str:
    """A central crop of a test_BIDS image, geometry kept (oblique affine)."""
    import nibabel as nib

    anat = shared_path("data", "test_BIDS", f"sub-{subject}", "ses-V01", "anat")
    img = nib.load(next(anat.glob("*.nii.gz")))
    crop = img.slicer[tuple(slice((n - size) // 2, (n - size) // 2 + size) for n in img.shape)]
    out = tmp_path / f"sub-{subject}_crop.nii.gz"
    crop.to_filename(str(out))
    return str(out)


def rotation(degrees: float, axis: int) -> np.ndarray:
    """4x4 affine rotating by ``degrees`` about voxel/world axis ``axis``."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    rot = np.eye(4)
    rot[[i, i, j, j], [i, j, i, j]] = c, -s, s, c
    return rot


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return shared_path("fixtures")


@pytest.fixture(scope="session")
def bids_dir() -> Path:
    return shared_path("data", "test_BIDS")


@pytest.fixture(scope="session")
def templates_dir() -> Path:
    return shared_path("data", "templates")


@pytest.fixture(scope="module")
def small_models(tmp_path_factory):
    """A models dir with width-8 rule-weight networks for Month24 T1w and Fetal T2w."""
    from bmex_wf.models import save_network

    folder = tmp_path_factory.mktemp("models")
    net = rule_network("enhance")
    for group, contrast in (("Month24", "T1"), ("Fetal", "T2")):
        save_network(net, folder / f"BMEX-{group}-{contrast}-model.pt")
    return folder


@pytest.fixture(scope="module")
def tf_home(tmp_path_factory):
    """A local TemplateFlow home holding MNI152NLin2009aSym (built from nilearn's files)."""
    from .templateflow_local import build_templateflow_home

    return build_templateflow_home(tmp_path_factory.mktemp("templateflow"))


@pytest.fixture
def local_tf(tf_home, monkeypatch):
    """Point the real ``templateflow.api`` at :func:`tf_home` for one test."""
    from .templateflow_local import use_templateflow_home

    use_templateflow_home(monkeypatch, tf_home)
    return tf_home
