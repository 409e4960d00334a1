"""Strict, safe loading of BME-X-family checkpoints (official or our own)."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from pathlib import Path

import torch

from .networks import build_network, check_width
from .registry import file_sha256

LOGGER = logging.getLogger(__name__)

#: How many mismatching keys an error message lists.
_SHOW = 5


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable or does not fit the network."""


def _first(items) -> str:
    items = sorted(items)
    more = f" (+{len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def read_state_dict(path) -> OrderedDict[str, torch.Tensor]:
    """Read a state dict from ``path`` on the CPU with ``weights_only=True``.

    Accepts a plain state dict or a dict whose ``state_dict`` entry holds one
    (as ``T1T2w-model.pt``); strips a DataParallel ``module.`` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 -- torch raises many types for corrupt files
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: not a readable PyTorch checkpoint (truncated or wrong format): {reason}"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(
        isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()
    ):
        raise CheckpointError(f"{path}: checkpoint does not hold a state dict of tensors")
    if all(k.startswith("module.") for k in obj):
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return OrderedDict(obj)


def infer_width(state: dict, path="checkpoint") -> int:
    """Base width F of a stored network: the output channels of ``conv1``."""
    weight = state.get("conv1.weight")
    if weight is None or weight.ndim != 5:
        raise CheckpointError(f"{path}: no 5-D 'conv1.weight' entry; not a BME-X-family network")
    try:
        return check_width(int(weight.shape[0]))
    except ValueError as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def check_state_dict(network: torch.nn.Module, state: dict, path="checkpoint") -> None:
    """Raise ``CheckpointError`` naming the first missing, extra or mis-shaped keys."""
    expected = network.state_dict()
    missing = expected.keys() - state.keys()
    extra = state.keys() - expected.keys()
    problems = []
    if missing:
        problems.append(f"missing keys: {_first(missing)}")
    if extra:
        problems.append(f"unexpected keys: {_first(extra)}")
    shapes = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    if shapes:
        problems.append("wrong shapes: " + "; ".join(shapes[:_SHOW]))
    if problems:
        raise CheckpointError(f"{path}: does not match the {type(network).__name__}: " + "; ".join(problems))


def state_sha256(network: torch.nn.Module) -> str:
    """SHA-256 of a network's weights (each state-dict key and its float32 C-order bytes).

    The identity of weights built in memory (the fixture rule), which have no file.
    """
    digest = hashlib.sha256()
    for key, value in network.state_dict().items():
        digest.update(key.encode())
        digest.update(value.detach().float().contiguous().cpu().numpy().tobytes())
    return digest.hexdigest()


def load_network(path, kind: str) -> torch.nn.Module:
    """Load checkpoint ``path`` into a network of ``kind``, strictly, in eval mode.

    The width is inferred from the stored tensors, so official files and smaller
    models of the same family load through the same call. The file's SHA-256 is kept as
    ``network.weights_sha256`` (the key of its recorded precision figures).
    """
    state = read_state_dict(path)
    network = build_network(kind, infer_width(state, path))
    check_state_dict(network, state, path)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    network.load_state_dict(state, strict=True)
    network.weights_sha256 = file_sha256(path)
    LOGGER.debug("Loaded %s network (width %d) from %s", kind, network.width, path)
    return network.eval()


def save_network(network: torch.nn.Module, path, *, half: bool = False) -> Path:
    """Save ``network`` as a plain state dict with the official key names.

    ``half`` stores floating tensors as float16 (the loader casts back).
    """
    path = Path(path)
    state = network.state_dict()
    if half:
        state = OrderedDict((k, v.half() if v.is_floating_point() else v) for k, v in state.items())
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    torch.save(state, tmp)
    tmp.replace(path)
    return path
