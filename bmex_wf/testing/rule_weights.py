"""Deterministic synthetic weights ("fixture rule") for BME-X-family networks.

Every state-dict entry gets its own generator seeded with the CRC-32 of its key,
one float64 draw with the full shape, a per-layer-type formula, and one cast to
float32. Used to prove numerical identity with the upstream networks without the
real checkpoints, and to make small test models of any width.
"""

from __future__ import annotations

import hashlib
import math
import zlib

import torch


def rule_tensor(key: str, shape) -> torch.Tensor:
    """Return the fixture-rule tensor for one state-dict ``key`` of ``shape``."""
    module, attr = key.rsplit(".", 1)
    if attr == "num_batches_tracked":
        return torch.zeros((), dtype=torch.int64)
    gen = torch.Generator(device="cpu")
    gen.manual_seed(zlib.crc32(key.encode("utf-8")))
    shape = tuple(shape)
    if module.startswith("bn") and attr == "running_var":
        return (torch.rand(shape, generator=gen, dtype=torch.float64) * 0.5 + 1.0).to(torch.float32)
    noise = torch.randn(shape, generator=gen, dtype=torch.float64)
    if module.startswith(("deconv", "conv")) and attr == "weight":
        fan_in_axis = 0 if module.startswith("deconv") else 1
        fan = shape[fan_in_axis] * math.prod(shape[2:])
        value = noise * math.sqrt(2.0 / fan)
    elif module.startswith(("deconv", "conv")) and attr == "bias":
        value = noise * 0.01
    elif module.startswith("bn") and attr == "weight":
        value = noise * 0.1 + 1.0
    elif module.startswith("bn") and attr in ("bias", "running_mean"):
        value = noise * 0.1
    else:
        raise ValueError(f"no fixture rule for state-dict key {key!r}")
    return value.to(torch.float32)


def rule_state_dict(template: dict) -> dict:
    """Fixture-rule values for every key of ``template`` (a state dict or key->shape map)."""
    return {
        key: rule_tensor(key, value.shape if hasattr(value, "shape") else value)
        for key, value in template.items()
    }


def apply_rule_weights(network: torch.nn.Module) -> torch.nn.Module:
    """Load fixture-rule weights into ``network`` (in place) and return it.

    ``network.weights_sha256`` becomes the weights' :func:`~bmex_wf.models.checkpoints.state_sha256`,
    the key of their recorded precision figures.
    """
    from ..models.checkpoints import state_sha256

    network.load_state_dict(rule_state_dict(network.state_dict()), strict=True)
    network.weights_sha256 = state_sha256(network)
    return network


def tensor_sha256(tensor: torch.Tensor) -> str:
    """SHA-256 of a tensor's C-order bytes, as in the fixture hash files."""
    return hashlib.sha256(tensor.contiguous().numpy().tobytes()).hexdigest()
