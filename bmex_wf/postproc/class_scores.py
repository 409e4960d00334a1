"""Tissue classes from the enhancement network's class scores (background, CSF, GM, WM)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from ..labels import LABEL_NAMES, LABELS, TISSUES

#: Tissue classes that get a probability map (``label-<abbreviation>_probseg``).
PROBSEG_LABELS = tuple(TISSUES)


def _check_scores(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    if scores.ndim < 2 or scores.shape[0] != len(LABELS):
        raise ValueError(
            f"class scores must have {len(LABELS)} channels on axis 0, got shape {scores.shape}"
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("class scores contain non-finite values")
    return scores


def class_probabilities(scores: np.ndarray) -> np.ndarray:
    """Per-class probabilities: softmax over the 4 class-score channels (axis 0).

    Parameters
    ----------
    scores : ndarray
        Stitched class scores, shape ``(4, ...)``.

    Returns
    -------
    ndarray
        float32 probabilities of the same shape, summing to 1 over axis 0.
    """
    from scipy.special import softmax

    return softmax(_check_scores(scores).astype(np.float64), axis=0).astype(np.float32)


def labels_from_scores(scores: np.ndarray) -> np.ndarray:
    """Label map (uint8, values in :data:`LABELS`): argmax over the class scores (ties -> lower label)."""
    return np.argmax(_check_scores(scores), axis=0).astype(np.uint8)


def write_label_table(path: str | Path) -> Path:
    """Write the BIDS ``dseg.tsv`` look-up table (columns ``index``, ``name``, ``abbreviation``)."""
    path = Path(path)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["index", "name", "abbreviation"])
        for index, abbreviation in LABELS.items():
            writer.writerow([index, LABEL_NAMES[index], abbreviation])
    return path
