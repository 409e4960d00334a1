"""Tile geometry settings of the fast scheme: placement rule, tile size, margin (no torch).

A :class:`TileSpec` fixes how tiles are laid over a brain mask. The geometry depends only on
the image, the mask and the device kind (CPU or GPU), never on the CPU model, so that nodes
of a mixed cluster compute the same tiles. Its :attr:`TileSpec.name` is a short string that
workflows hash and QC records keep.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

#: Placement rules: ``columns`` (cross-section ``tile``², length fitted to the brain along
#: the column), ``cubes`` (``tile``³ tiles fitted to the mask), ``lattice`` (``tile``³ tiles
#: on a fixed lattice over the mask's bounding box).
PLACEMENTS = ("columns", "cubes", "lattice")
#: Device kinds with their own default geometry.
DEVICE_KINDS = ("cpu", "gpu")
#: Longest column tile (voxels) of the ``columns`` rule; longer runs are split evenly.
MAX_COLUMN_LENGTH = 256

_NAME = re.compile(r"^(?P<placement>[a-z]+)-(?P<tile>\d+)-m(?P<margin>\d+)-d(?P<dilation>\d+)$")


@dataclass(frozen=True)
class TileSpec:
    """How the fast scheme lays its tiles.

    Attributes
    ----------
    placement : str
        One of :data:`PLACEMENTS`.
    tile : int
        Tile edge (the cross-section edge for ``columns``), a multiple of 8.
    margin : int
        Voxels dropped at every face of a tile's output; the rest is the kept core.
    dilation : int
        The mask is dilated by this many voxels (cube) before it is covered.
    """

    placement: str
    tile: int
    margin: int
    dilation: int = 2

    def __post_init__(self):
        if self.placement not in PLACEMENTS:
            raise ValueError(f"unknown tile placement {self.placement!r}; expected one of {PLACEMENTS}")
        if self.dilation < 0:
            raise ValueError(f"mask dilation must be >= 0, got {self.dilation!r}")

    @property
    def name(self) -> str:
        """Short form, e.g. ``columns-40-m5-d2`` (:func:`parse_geometry` reads it back)."""
        return f"{self.placement}-{self.tile}-m{self.margin}-d{self.dilation}"

    def as_dict(self) -> dict:
        return asdict(self)


#: Default geometry per device kind, chosen by measurement (benchmarks/README.md).
DEFAULT_GEOMETRY = {
    "cpu": TileSpec("columns", 48, 6, 1),
    "gpu": TileSpec("cubes", 64, 5, 2),
}


def default_geometry(device_kind: str) -> TileSpec:
    """Default :class:`TileSpec` for ``"cpu"`` or ``"gpu"`` (``"cuda"`` counts as GPU)."""
    kind = "gpu" if device_kind in ("gpu", "cuda") or str(device_kind).startswith("cuda:") else device_kind
    if kind not in DEVICE_KINDS:
        raise ValueError(f"unknown device kind {device_kind!r}; expected 'cpu' or 'gpu'")
    return DEFAULT_GEOMETRY[kind]


def parse_geometry(name: str) -> TileSpec:
    """The :class:`TileSpec` written as ``name`` (see :attr:`TileSpec.name`)."""
    match = _NAME.match(str(name))
    if not match:
        raise ValueError(f"tile geometry {name!r} is not of the form <placement>-<tile>-m<margin>-d<dilation>")
    return TileSpec(match["placement"], int(match["tile"]), int(match["margin"]), int(match["dilation"]))
