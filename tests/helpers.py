"""Helpers shared by the tests: small rule-weight networks and a node runner."""

from __future__ import annotations

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
