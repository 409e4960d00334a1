"""``benchmarks/eval_demo_like.py``: the demo's tissue check on a held-out scan."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from bmex_wf.labels import CSF, GM, WM

from .helpers import load_benchmark


@pytest.fixture(scope="module")
def eval_demo_like():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # it imports eval_pair
    try:
        yield load_benchmark("eval_demo_like")
    finally:
        sys.path.pop(0)


def test_tissue_scores_compare_gm_and_wm_with_the_reference(eval_demo_like):
    reference = np.zeros((40, 40, 40), np.uint8)
    reference[:20], reference[20:] = GM, WM  # 32 mL each at 1 mm
    labels = reference.copy()
    labels[15:20] = WM  # 8 mL of GM called WM
    labels[0, 0, 0] = CSF
    line = eval_demo_like.tissue_scores(labels, reference)
    scores = dict(field.split("=") for field in line.split())
    assert float(scores["gm_dice"]) == pytest.approx(2 * 23999 / (23999 + 32000), abs=1e-3)
    assert float(scores["wm_dice"]) == pytest.approx(2 * 32000 / (40000 + 32000), abs=1e-3)
    assert [scores[k] for k in ("gm_ml", "wm_ml", "ref_gm_ml", "ref_wm_ml")] == ["24", "40", "32", "32"]
