"""``benchmarks/eval_builtin.py``: the real-pair score on the held-out slab, the table rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bmex_wf.metrics import correlation, psnr
from bmex_wf.training.data import Volume, split_slab

from .helpers import IdentityNetwork, load_benchmark
from .test_demo_scores import EXAMPLE_SCORES


@pytest.fixture(scope="module")
def eval_builtin():
    return load_benchmark("eval_builtin")


Identity = IdentityNetwork


def test_pair_scores_use_the_held_out_slab_only(eval_builtin):
    rng = np.random.default_rng(5)
    shape = (32, 32, 60)
    mask = np.zeros(shape, np.uint8)
    mask[4:28, 4:28, 5:55] = 1
    target = (400 + 200 * np.sin(np.indices(shape)[0] / 4.0)) * mask
    sigma = np.full(shape, 5.0)
    sigma[..., 20:42] = 50.0  # noisy around the held-out slab (z 24-37), clean elsewhere
    degraded = (target + rng.normal(0, 1, shape) * sigma) * mask
    volume = Volume(name="pair", clean=target.astype(np.float32), mask=mask,
                    labels=np.zeros(shape, np.uint8), degraded=degraded.astype(np.float32))

    scores = eval_builtin.pair_scores(volume, Identity(), threads=1)
    _, held = split_slab(volume, *eval_builtin.PAIR_SLAB)
    inside = held.mask > 0
    assert scores["psnr_in"] == pytest.approx(psnr(held.degraded, held.clean, inside))
    assert scores["psnr_in"] == pytest.approx(20 * np.log10(1000 / 50), abs=0.5)  # not the clean parts
    assert scores["corr_in"] == pytest.approx(correlation(held.degraded, held.clean, inside))
    # the identity network changes nothing
    assert scores["psnr_out"] == pytest.approx(scores["psnr_in"], abs=1e-3)
    assert scores["corr_out"] == pytest.approx(scores["corr_in"], abs=1e-5)


def test_table_rows_and_demo_scores(eval_builtin, tmp_path, capsys):
    header = eval_builtin.table_header("corr")
    row = eval_builtin.table_row("bmex-pair", 1, 28.3, 27.1, 0.923, 0.91)
    assert "corr in" in header and row.split() == ["bmex-pair", "1", "28.30", "27.10", "-1.20", "0.9230",
                                                   "0.9100", "-0.0130", "WORSE"]
    path = tmp_path / "demo_scores.json"
    path.write_text(json.dumps(EXAMPLE_SCORES))
    eval_builtin.print_demo_scores(path)
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].split() == ["demo", "1", "21.23", "23.46", "2.22", "0.8123", "0.8568", "0.0444", "better"]
    assert lines[-1].startswith("GM Dice 0.712, 650 mL (MNI152 1080 mL); WM Dice 0.801")
