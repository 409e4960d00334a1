"""Tissue labels and probabilities from the class scores, and the BIDS label table."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from bmex_wf.postproc.class_scores import (
    LABELS,
    class_probabilities,
    labels_from_scores,
    write_label_table,
)


def test_labels_order():
    assert LABELS == {0: "BG", 1: "CSF", 2: "GM", 3: "WM"}


def test_softmax_probabilities():
    rng = np.random.default_rng(0)
    scores = rng.normal(0, 3, size=(4, 6, 5, 4)).astype(np.float32)
    probs = class_probabilities(scores)
    assert probs.shape == scores.shape and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-6)
    assert np.all(probs > 0)
    # Ratios of probabilities are exp(score differences).
    np.testing.assert_allclose(probs[2] / probs[3], np.exp(scores[2] - scores[3]), rtol=1e-4)
    # Adding the same value to every class changes nothing.
    np.testing.assert_allclose(class_probabilities(scores + 50), probs, atol=1e-6)
    np.testing.assert_array_equal(labels_from_scores(scores), np.argmax(probs, axis=0))


def test_large_scores_do_not_overflow():
    scores = np.array([1000.0, 999.0, -1000.0, 0.0]).reshape(4, 1)
    probs = class_probabilities(scores)
    assert np.all(np.isfinite(probs))
    assert probs[0, 0] == pytest.approx(1 / (1 + np.exp(-1)), rel=1e-5)


def test_labels_are_argmax_uint8_ties_to_lower_label():
    scores = np.zeros((4, 3))
    scores[3, 0] = 2.0  # WM
    scores[1, 1] = 1.0  # CSF
    scores[[2, 3], 2] = 5.0  # tie GM/WM -> GM
    labels = labels_from_scores(scores)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, [3, 1, 2])


@pytest.mark.parametrize("shape", [(3, 4, 4), (5, 2), (4,)])
def test_scores_need_four_channels(shape):
    with pytest.raises(ValueError, match="4 channels"):
        labels_from_scores(np.zeros(shape))


def test_non_finite_scores():
    scores = np.zeros((4, 2))
    scores[1, 1] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        class_probabilities(scores)


def test_label_table(tmp_path):
    path = write_label_table(tmp_path / "dseg.tsv")
    with path.open() as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    assert list(rows[0]) == ["index", "name", "abbreviation"]
    assert {int(r["index"]): r["abbreviation"] for r in rows} == LABELS
    assert [r["name"] for r in rows] == [
        "Background",
        "Cerebrospinal Fluid",
        "Gray Matter",
        "White Matter",
    ]
