"""BME-X networks and inference in plain PyTorch (no Nipype import).

The names below are loaded on first use, so that the torch-free :mod:`bmex_wf.models.registry`
can be imported without importing torch.
"""

__all__ = ["OFFICIAL_WIDTH", "CheckpointError", "EnhancementNetwork", "SkullStripNetwork",
           "build_network", "enhance_volume", "load_network", "resolve_device", "save_network",
           "skullstrip_volume"]

_CHECKPOINTS = ("CheckpointError", "load_network", "save_network")
_INFERENCE = ("enhance_volume", "resolve_device", "skullstrip_volume")


def __getattr__(name: str):
    if name in _CHECKPOINTS:
        from . import checkpoints as module
    elif name in _INFERENCE:
        from . import inference as module
    elif name in __all__:
        from . import networks as module
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(module, name)
