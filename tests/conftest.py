"""Shared test fixtures: paths to ../shared, small rule-weight models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("NIPYPE_NO_ET", "1")

from .helpers import rule_network, shared_path


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
