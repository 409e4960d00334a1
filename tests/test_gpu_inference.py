"""The CUDA path (batched tiles, reduced precision, stitching on the GPU) against the CPU result.

Reads the preprocessed brain carried in the repository (``benchmarks/data``), so it needs no
``../shared``; skipped without a CUDA device.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch

from bmex_wf.metrics import psnr
from bmex_wf.models.geometry import default_geometry
from bmex_wf.models.inference import run_enhancement
from bmex_wf.models.networks import build_network
from bmex_wf.testing.rule_weights import apply_rule_weights

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

DATA = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "sub-0002_preproc.npz"


@pytest.fixture(scope="module")
def brain_block():
    """A 96³ block of the benchmark brain at the top of the brain (cortex and background)."""
    with np.load(DATA) as data:
        vol = data["volume"].astype(np.float32)
        mask = np.unpackbits(data["mask"], count=vol.size).reshape(vol.shape).astype(bool)
    box = (slice(0, 96), slice(31, 127), slice(52, 148))
    return np.ascontiguousarray(vol[box]), mask[box]


@pytest.fixture
def exact_float32():
    before = torch.backends.cudnn.allow_tf32
    torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32 = before


def test_cuda_float32_equals_cpu(brain_block, exact_float32):
    vol, mask = brain_block
    net = apply_rule_weights(build_network("enhance", 8))
    geometry = default_geometry("gpu")
    cpu = run_enhancement(vol, copy.deepcopy(net), mask=mask, geometry=geometry, device="cpu",
                          precision="fp32", progress=False)
    gpu = run_enhancement(vol, net, mask=mask, geometry=geometry, device="cuda", precision="fp32",
                          progress=False)
    assert gpu.report["device"].startswith("cuda") and gpu.report["tiles"] == cpu.report["tiles"]
    np.testing.assert_allclose(gpu.recon, cpu.recon, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(gpu.scores, cpu.scores, rtol=1e-3, atol=1e-2)


def test_cuda_default_path_is_batched_reduced_precision_and_close(brain_block):
    vol, mask = brain_block
    net = apply_rule_weights(build_network("enhance", 8))
    cpu = run_enhancement(vol, copy.deepcopy(net), mask=mask, geometry=default_geometry("gpu"),
                          device="cpu", precision="fp32", progress=False)
    low = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    gpu = run_enhancement(vol, net, mask=mask, device="cuda", precision=low, progress=False)
    report = gpu.report
    assert report["geometry"] == default_geometry("gpu").name and report["precision"] == low
    assert report["batch_size"] > 1 and report["uncovered_brain_voxels"] == 0
    assert np.isfinite(gpu.recon).all()
    assert psnr(gpu.recon, cpu.recon, mask, peak=float(cpu.recon[mask].max())) >= 35.0
