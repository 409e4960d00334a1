"""BIDS inputs: image discovery with pybids, filters, validation and precomputed masks."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from ..documents import read_document
from ..labels import CONTRASTS

LOGGER = logging.getLogger("bmex_wf.bids")


_NIFTI = re.compile(r"\.nii(\.gz)?$")


def load_bids_filters(path) -> dict:
    """Read a ``--bids-filter-file`` (JSON: ``{"t1w": {...}, "t2w": {...}}``)."""
    path = Path(path)
    filters = read_document(path, json.loads, (json.JSONDecodeError,), "JSON file")
    if not isinstance(filters, dict) or any(not isinstance(v, dict) for v in filters.values()):
        raise ValueError(f"{path}: expected an object like {{\"t1w\": {{\"acquisition\": \"mprage\"}}}}")
    unknown = set(filters) - {"t1w", "t2w"}
    if unknown:
        raise ValueError(f"{path}: unknown query {sorted(unknown)}; use 't1w' and/or 't2w'")
    return filters


def _layout(bids_dir, validate: bool):
    from bids import BIDSLayout

    return BIDSLayout(str(bids_dir), validate=validate)


def find_images(bids_dir, participant_label=None, session_label=None, bids_filters=None,
                layout=None) -> list[dict]:
    """Every T1w and T2w image of the dataset, filters honoured.

    Returns
    -------
    list of dict
        ``{"path", "contrast", "subject", "session"}`` per image, sorted by path.
    """
    layout = layout or _layout(bids_dir, validate=False)
    filters = bids_filters or {}
    images = []
    for contrast in CONTRASTS:
        query = {"datatype": "anat", "suffix": contrast, "extension": [".nii", ".nii.gz"],
                 "return_type": "object"}
        if participant_label:
            query["subject"] = [label.removeprefix("sub-") for label in participant_label]
        if session_label:
            query["session"] = [label.removeprefix("ses-") for label in session_label]
        query.update(filters.get(contrast.lower(), {}))
        for bids_file in layout.get(**query):
            ents = bids_file.get_entities()
            images.append({"path": Path(bids_file.path), "contrast": contrast,
                           "subject": ents.get("subject"), "session": ents.get("session")})
    return sorted(images, key=lambda item: str(item["path"]))


def validation_warnings(bids_dir, layout=None) -> list[str]:
    """Problems of the input dataset (missing description, non-BIDS files), as warnings."""
    from bids import BIDSValidator

    bids_dir = Path(bids_dir)
    warnings = []
    desc = bids_dir / "dataset_description.json"
    if not desc.is_file():
        warnings.append(f"{desc} is missing")
    validator = BIDSValidator()
    for path in sorted(bids_dir.rglob("*")):
        if path.is_file() and not any(part.startswith(".") for part in path.parts):
            rel = "/" + path.relative_to(bids_dir).as_posix()
            if rel.startswith(("/derivatives/", "/sourcedata/")):
                continue
            if not validator.is_bids(rel):
                warnings.append(f"{rel} is not a valid BIDS file name or location")
    return warnings


def find_precomputed_mask(derivatives_dirs, image: Path, contrast: str) -> Path | None:
    """A ``desc-brain_mask`` for ``image`` in existing derivatives folders, if any."""
    src = _NIFTI.sub("", image.name)
    prefix = src[: -len(contrast)] if src.endswith(contrast) else src + "_"
    for folder in derivatives_dirs or ():
        for candidate in sorted(Path(folder).rglob(f"{prefix}*desc-brain_mask.nii*")):
            return candidate
    return None
