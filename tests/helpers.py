"""Helpers shared by the tests: ../shared data and crops, phantoms, small networks, a node runner,
benchmark modules."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from bmex_wf.models import build_network
from bmex_wf.testing.rule_weights import apply_rule_weights

#: The read-only data folder (``$BMEX_SHARED_DIR``, else ``../shared`` next to the project).
SHARED = Path(os.environ.get("BMEX_SHARED_DIR", Path(__file__).resolve().parents[1].parent / "shared"))


def shared_path(*parts) -> Path:
    """Path under ../shared, skipping the test with a reason when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"shared data not available: {path} is absent")
    return path


def real_crop(tmp_path, subject="0002", size=100) -> str:
    """A central crop of a test_BIDS image, geometry kept (oblique affine)."""
    import nibabel as nib

    anat = shared_path("data", "test_BIDS", f"sub-{subject}", "ses-V01", "anat")
    img = nib.load(next(anat.glob("*.nii.gz")))
    crop = img.slicer[tuple(slice((n - size) // 2, (n - size) // 2 + size) for n in img.shape)]
    out = tmp_path / f"sub-{subject}_crop.nii.gz"
    crop.to_filename(str(out))
    return str(out)


def rotation(degrees: float, axis: int) -> np.ndarray:
    """4x4 affine rotating by ``degrees`` about voxel/world axis ``axis``."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    rot = np.eye(4)
    rot[[i, i, j, j], [i, j, i, j]] = c, -s, s, c
    return rot


def distance_from(centre, shape) -> np.ndarray:
    """Distance in voxels of every voxel of an array of ``shape`` from the point ``centre``."""
    grid = np.indices(shape).astype(float)
    return np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))


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
