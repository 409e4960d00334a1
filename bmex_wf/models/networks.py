"""The two BME-X networks: enhancement (E) and skull stripping (S).

Both are built from one dense U-Net trunk (``_DenseUNet``) whose layers are
registered directly on the network, so that parameter names are exactly those
of the official checkpoints (``conv4_1``, ``bn19_recon``, ...). The trunk has a
base width ``F`` and growth rates ``F/4`` (full resolution) and ``F/2`` (lower
resolutions); official widths are 64 (E) and 32 (S).
"""

from __future__ import annotations

import contextlib
from functools import partial
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

#: Default (official) width of each network kind.
OFFICIAL_WIDTH = {"enhance": 64, "skullstrip": 32}

#: Spatial sizes must be multiples of this (three 2x poolings, matched skips).
SIZE_MULTIPLE = 8



class _Block(NamedTuple):
    """A dense block: head conv (``head_mult * F`` channels), its BN, three dense units.

    Each unit adds ``F // growth_div`` channels: F/4 at full resolution, F/2 below.
    """

    head: str
    head_bn: str
    units: tuple
    head_mult: int
    growth_div: int


_ENC1 = _Block("conv2", "bn2", ("3", "4", "4_1"), 1, 4)
_ENC2 = _Block("conv6", "bn6", ("7", "8", "9"), 1, 2)
_DEC3 = _Block("conv12", "bn12", ("13", "14", "15"), 4, 2)
_DEC2A = _Block("conv16", "bn16", ("17", "18", "19"), 4, 2)
_DEC2B = _Block("conv20", "bn20", ("21", "22", "23"), 4, 2)
_DEC1A = _Block("conv24", "bn24", ("25", "26", "27"), 2, 4)
_DEC1B = _Block("conv28", "bn28", ("29", "30", "31"), 1, 4)


def _conv(cin: int, cout: int) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, kernel_size=3, stride=1, padding=1, bias=True)


def _deconv(cin: int, cout: int) -> nn.ConvTranspose3d:
    return nn.ConvTranspose3d(cin, cout, kernel_size=4, stride=2, padding=1, bias=True)


def _pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool3d(x, kernel_size=3, stride=2, padding=1)


def check_width(width: int) -> int:
    """Validate a base width (positive multiple of 8) and return it."""
    if not isinstance(width, int) or width <= 0 or width % 8:
        raise ValueError(f"network width must be a positive multiple of 8, got {width!r}")
    return width


def check_input_shape(shape) -> None:
    """Raise ``ValueError`` unless ``shape`` is ``N, C, D, H, W`` with D, H, W multiples of 8."""
    if len(shape) != 5:
        raise ValueError(f"network input must be 5-D (N, C, D, H, W), got shape {tuple(shape)}")
    bad = [s for s in shape[2:] if s <= 0 or s % SIZE_MULTIPLE]
    if bad:
        raise ValueError(
            f"network input spatial sizes must be positive multiples of {SIZE_MULTIPLE}, "
            f"got {tuple(shape[2:])}"
        )


def _in_float32(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Run ``layer`` on ``x`` in float32 with autocast off."""
    with torch.autocast(x.device.type, enabled=False):
        return layer(x.float())


class _DenseUNet(nn.Module):
    """Host module for one or more dense U-Net trunks with checkpoint-exact names.

    Layers named in ``fp32_layers`` run in float32 even under autocast.
    """

    fp32_layers: frozenset = frozenset()

    def _add(self, name: str, layer: nn.Module) -> None:
        self.add_module(name, layer)

    def _layer(self, name: str):
        layer = self._modules[name]
        return partial(_in_float32, layer) if name in self.fp32_layers else layer

    def _add_dense_block(self, block: _Block, cin: int, f: int, sfx: str) -> int:
        """Register a head conv, its BN and three dense units; return output channels."""
        channels, growth = block.head_mult * f, f // block.growth_div
        self._add(block.head + sfx, _conv(cin, channels))
        self._add(block.head_bn + sfx, nn.BatchNorm3d(channels))
        for unit in block.units:
            self._add(f"conv{unit}{sfx}", _conv(channels, growth))
            channels += growth
            self._add(f"bn{unit}{sfx}", nn.BatchNorm3d(channels))
        return channels

    def _add_trunk(self, cin: int, cout: int, width: int, sfx: str = "") -> None:
        """Register every layer of one trunk, in execution (= state-dict) order."""
        f = check_width(width)
        self._add("conv1" + sfx, _conv(cin, f))
        self._add("bn1" + sfx, nn.BatchNorm3d(f))
        c = self._add_dense_block(_ENC1, f, f, sfx)
        self._add("conv5" + sfx, _conv(c, f))
        self._add("bn5" + sfx, nn.BatchNorm3d(f))
        c = self._add_dense_block(_ENC2, f, f, sfx)
        self._add("conv10" + sfx, _conv(c, 2 * f))
        self._add("bn10" + sfx, nn.BatchNorm3d(2 * f))
        self._add("conv11" + sfx, _conv(2 * f, 2 * f))
        self._add("bn11" + sfx, nn.BatchNorm3d(2 * f))
        self._add("deconv11" + sfx, _deconv(2 * f, 2 * f))
        c = self._add_dense_block(_DEC3, 4 * f, f, sfx)
        self._add("deconv15" + sfx, _deconv(c, 2 * f))
        c = self._add_dense_block(_DEC2A, 4 * f, f, sfx)
        c = self._add_dense_block(_DEC2B, c, f, sfx)
        self._add("deconv23" + sfx, _deconv(c, f))
        c = self._add_dense_block(_DEC1A, 2 * f, f, sfx)
        c = self._add_dense_block(_DEC1B, c, f, sfx)
        self._add("conv32" + sfx, _conv(c, cout))
        self._add("bn32" + sfx, nn.BatchNorm3d(cout))

    def _bn_relu(self, name: str, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self._layer(name)(x))

    def _dense(self, raw: torch.Tensor, block: _Block, sfx: str, *, new_first=False,
               activated_third=False) -> torch.Tensor:
        """Run a dense block from the raw head output; return the activated result.

        ``new_first``: the first concatenation puts the new channels first (bn7).
        ``activated_third``: the third unit is appended to the activated tensor (bn19).
        """
        act = self._bn_relu(block.head_bn + sfx, raw)
        for idx, unit in enumerate(block.units):
            new = self._layer(f"conv{unit}{sfx}")(act)
            if idx == 0 and new_first:
                raw = torch.cat([new, raw], 1)
            elif idx == 2 and activated_third:
                raw = torch.cat([act, new], 1)
            else:
                raw = torch.cat([raw, new], 1)
            act = self._bn_relu(f"bn{unit}{sfx}", raw)
        return act

    def _trunk(self, x: torch.Tensor, sfx: str = "") -> torch.Tensor:
        """Forward pass of one trunk; returns ReLU(bn32(conv32(...)))."""
        lay = self._layer
        h = lay("conv2" + sfx)(self._bn_relu("bn1" + sfx, lay("conv1" + sfx)(x)))
        s1 = lay("conv5" + sfx)(self._dense(h, _ENC1, sfx))
        h = lay("conv6" + sfx)(_pool(self._bn_relu("bn5" + sfx, s1)))
        s2 = lay("conv10" + sfx)(self._dense(h, _ENC2, sfx, new_first=True))
        s3 = lay("conv11" + sfx)(_pool(self._bn_relu("bn10" + sfx, s2)))
        up = lay("deconv11" + sfx)(_pool(self._bn_relu("bn11" + sfx, s3)))
        h = lay("conv12" + sfx)(torch.cat([s3, up], 1))
        up = lay("deconv15" + sfx)(self._dense(h, _DEC3, sfx))
        h = lay("conv16" + sfx)(torch.cat([s2, up], 1))
        h = lay("conv20" + sfx)(self._dense(h, _DEC2A, sfx, activated_third=True))
        up = lay("deconv23" + sfx)(self._dense(h, _DEC2B, sfx))
        h = lay("conv24" + sfx)(torch.cat([s1, up], 1))
        h = lay("conv28" + sfx)(self._dense(h, _DEC1A, sfx))
        h = lay("conv32" + sfx)(self._dense(h, _DEC1B, sfx))
        return self._bn_relu("bn32" + sfx, h)


class EnhancementNetwork(_DenseUNet):
    """Network E: segmentation trunk, connection, reconstruction trunk.

    ``forward(x)`` returns ``(seg, recon)``: ``seg`` holds 4 non-negative class
    scores (not probabilities); ``recon`` is the enhanced intensity (1 channel).
    """

    n_classes = 4
    kind = "enhance"
    #: Layer sets :func:`float32_layers` can keep in float32: ``tail``, the reconstruction
    #: trunk's last dense block and output layer; ``recon``, the connection and the whole
    #: reconstruction trunk (only the segmentation trunk left in reduced precision).
    FLOAT32_PARTS = ("tail", "recon")

    def __init__(self, width: int = OFFICIAL_WIDTH["enhance"]):
        super().__init__()
        self.width = check_width(width)
        half = width // 2
        self._add_trunk(1, self.n_classes, width)
        self._add("conv1_con", _conv(self.n_classes, half))
        self._add("bn1_con", nn.BatchNorm3d(half))
        self._add("conv2_con", _conv(1, half))
        self._add("bn2_con", nn.BatchNorm3d(half))
        self._add_trunk(width, 1, width, "_recon")

    def forward(self, x: torch.Tensor):
        check_input_shape(x.shape)
        seg = self._trunk(x)
        a = self._bn_relu("bn1_con", self._layer("conv1_con")(torch.softmax(seg, dim=1)))
        b = self._bn_relu("bn2_con", self._layer("conv2_con")(x))
        recon = self._trunk(torch.cat([a, b], 1), "_recon")
        return seg, recon


class SkullStripNetwork(_DenseUNet):
    """Network S (LifespanStrip): one trunk with a 4-channel softmax output."""

    n_classes = 4
    kind = "skullstrip"

    def __init__(self, width: int = OFFICIAL_WIDTH["skullstrip"]):
        super().__init__()
        self.width = check_width(width)
        self._add_trunk(1, self.n_classes, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input_shape(x.shape)
        return torch.softmax(self._trunk(x), dim=1)


def float32_part(network: nn.Module, part: str) -> frozenset:
    """Names of the layers of ``part`` (see ``EnhancementNetwork.FLOAT32_PARTS``)."""
    names = [name for name, _ in network.named_children()]
    if part == "tail":
        tail = {f"{layer}{n}_recon" for n in (28, 29, 30, 31, 32) for layer in ("conv", "bn")}
        return frozenset(n for n in names if n in tail)
    if part == "recon":
        return frozenset(n for n in names if n.endswith(("_recon", "_con")))
    raise ValueError(f"unknown float32 part {part!r}; expected 'tail' or 'recon'")


@contextlib.contextmanager
def float32_layers(network: nn.Module, layers=None):
    """Within the block, run ``layers`` of ``network`` in float32 under autocast.

    ``layers``: a part name (``"tail"``, ``"recon"``), a set of layer names, or ``None``
    (nothing changed).
    """
    if not layers:
        yield network
        return
    module = getattr(network, "_orig_mod", network)  # the module inside torch.compile's wrapper
    before = module.fp32_layers
    module.fp32_layers = float32_part(module, layers) if isinstance(layers, str) else frozenset(layers)
    try:
        yield network
    finally:
        module.fp32_layers = before


def is_compact(network: nn.Module) -> bool:
    """Whether ``network`` is narrower than the official network of its kind."""
    kind = getattr(network, "kind", "enhance")
    return getattr(network, "width", OFFICIAL_WIDTH[kind]) < OFFICIAL_WIDTH[kind]


NETWORK_CLASSES = {"enhance": EnhancementNetwork, "skullstrip": SkullStripNetwork}


def build_network(kind: str, width: int | None = None) -> nn.Module:
    """Build network ``kind`` (``"enhance"`` or ``"skullstrip"``) in eval mode.

    ``width`` defaults to the official width of that kind (64 for E, 32 for S).
    """
    if kind not in NETWORK_CLASSES:
        raise ValueError(f"unknown network kind {kind!r}; expected one of {sorted(NETWORK_CLASSES)}")
    net = NETWORK_CLASSES[kind](OFFICIAL_WIDTH[kind] if width is None else width)
    return net.eval()
