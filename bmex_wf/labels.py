"""The one vocabulary: contrasts, brain-mask sources, output grids, tissue labels and order.

Every tuple and mapping of these names elsewhere is derived from the definitions here.
"""

from __future__ import annotations

#: Structural contrasts BME-X serves.
CONTRASTS = ("T1w", "T2w")

#: Brain-mask sources (``--brain-mask-source``), ``auto`` first.
MASK_SOURCES = ("auto", "lifespanstrip", "precomputed", "nonzero", "template")

#: Grids the outputs are written on (``--output-resolution``), ``auto`` first: ``native`` the
#: input's grid only, ``network`` the input's grid and the network's grid.
OUTPUT_RESOLUTIONS = ("auto", "native", "network")

#: Label values of the 4-class segmentation (0 background, 1 CSF, 2 grey matter, 3 white matter).
BG, CSF, GM, WM = 0, 1, 2, 3

#: Label value -> short name, background included (``dseg.tsv``, reports).
LABELS = {BG: "BG", CSF: "CSF", GM: "GM", WM: "WM"}

#: Label value -> short name of the three tissues (probseg ``label-`` entities, volume columns).
TISSUES = {value: name for value, name in LABELS.items() if value != BG}

#: The three tissue names in label order: ``("CSF", "GM", "WM")``.
TISSUE_NAMES = tuple(TISSUES.values())

#: Label value -> long name (``dseg.tsv``).
LABEL_NAMES = {BG: "Background", CSF: "Cerebrospinal Fluid", GM: "Gray Matter", WM: "White Matter"}


def tissue_order(contrast: str, age_group: str = "Month24") -> tuple[int, int, int]:
    """Tissue labels from darkest to brightest for a contrast and BME-X age group.

    In T1w after the first months CSF < GM < WM; in T2w WM < GM < CSF; in the first months of
    life grey and white matter swap (unmyelinated white matter).

    >>> tissue_order("T1w"), tissue_order("T2w"), tissue_order("T1w", "Month0")
    ((1, 2, 3), (3, 2, 1), (1, 3, 2))
    """
    early = age_group in ("Fetal", "Month0", "Month3")
    if contrast == "T1w":
        return (CSF, WM, GM) if early else (CSF, GM, WM)
    if contrast == "T2w":
        return (GM, WM, CSF) if early else (WM, GM, CSF)
    raise ValueError(f"unknown contrast {contrast!r}; expected one of {', '.join(CONTRASTS)}")
