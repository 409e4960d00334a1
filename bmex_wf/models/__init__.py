"""BME-X networks and inference in plain PyTorch (no Nipype import)."""

from .checkpoints import CheckpointError, load_network, save_network
from .inference import enhance_volume, resolve_device, skullstrip_volume
from .networks import (
    OFFICIAL_WIDTH,
    EnhancementNetwork,
    SkullStripNetwork,
    build_network,
)

__all__ = [
    "OFFICIAL_WIDTH",
    "CheckpointError",
    "EnhancementNetwork",
    "SkullStripNetwork",
    "build_network",
    "enhance_volume",
    "load_network",
    "resolve_device",
    "save_network",
    "skullstrip_volume",
]
