"""Helpers shared by the tests: small networks, a node runner, benchmark modules."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from bmex_wf.models import build_network
from bmex_wf.testing.rule_weights import apply_rule_weights


def rule_network(kind: str = "enhance", width: int | None = 8):
    """Network ``kind`` of ``width`` (None: official) with the deterministic fixture-rule weights."""
    return apply_rule_weights(build_network(kind) if width is None else build_network(kind, width))


def run_node(interface, base_dir, name: str = "node", **inputs):
    """Run ``interface`` as a Nipype node in ``base_dir``; returns its outputs."""
    from nipype.pipeline import engine as pe

    node = pe.Node(interface, name=name, base_dir=str(base_dir))
    for key, value in inputs.items():
        setattr(node.inputs, key, value)
    return node.run().outputs


def load_benchmark(name: str):
    """The module ``benchmarks/<name>.py`` (the benchmarks are scripts, not a package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class IdentityNetwork(torch.nn.Module):
    """Network E's interface (4 class scores, reconstruction) returning its input."""

    width = 8

    def forward(self, x):
        return torch.zeros((x.shape[0], 4, *x.shape[2:])), x
