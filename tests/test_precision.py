"""Precision per device and per network: the 45 dB bf16 rule, native bf16, float32 tail."""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import pytest
import torch

from bmex_wf.models import precision as prec
from bmex_wf.models.checkpoints import load_network, save_network, state_sha256
from bmex_wf.models.inference import enhance_volume, run_enhancement
from bmex_wf.models.networks import build_network, float32_layers, float32_part
from bmex_wf.models.precision import (
    BF16_MIN_PSNR_DB,
    Precision,
    bf16_default,
    network_precision,
    resolve_precision,
)
from bmex_wf.models.registry import builtin_model_path, file_sha256
from bmex_wf.testing.rule_weights import apply_rule_weights

CPU = torch.device("cpu")


def test_bf16_becomes_default_only_from_45_db():
    assert BF16_MIN_PSNR_DB == 45.0
    assert bf16_default({"bf16_psnr_db": 45.0}) == Precision(torch.bfloat16)
    assert bf16_default({"bf16_psnr_db": 44.99}) == Precision(None)
    assert bf16_default({"bf16_psnr_db": 31.0, "bf16_tail32_psnr_db": 46.0}) == \
        Precision(torch.bfloat16, "tail")
    assert bf16_default({"bf16_psnr_db": 31.0, "bf16_tail32_psnr_db": 40.0}) == Precision(None)
    assert bf16_default({"bf16_psnr_db": 31.0, "bf16_tail32_psnr_db": 40.0,
                         "bf16_recon32_psnr_db": 80.0}) == Precision(torch.bfloat16, "recon")
    assert bf16_default(None) == Precision(None)


@pytest.mark.parametrize("native", [False, True])
def test_auto_uses_bf16_only_on_native_cpus(monkeypatch, native):
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: native)
    good = {"bf16_psnr_db": 50.0}
    assert resolve_precision("auto", CPU, good).dtype is (torch.bfloat16 if native else None)
    assert resolve_precision("auto", CPU, {"bf16_psnr_db": 30.0}).dtype is None
    assert resolve_precision("auto", CPU, None).dtype is None
    # explicit names are taken as given
    assert resolve_precision("bf16", CPU).dtype is torch.bfloat16
    assert resolve_precision("fp32", CPU, good).dtype is None
    assert resolve_precision("bf16-tail32", CPU) == Precision(torch.bfloat16, "tail")
    assert resolve_precision("bf16-recon32", CPU).name == "bf16-recon32"
    with pytest.raises(ValueError, match="precision"):
        resolve_precision("int8", CPU)


def test_native_bf16_needs_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(prec, "_cpu_flags", lambda: {"avx2", "avx512f"})
    assert not prec.cpu_has_native_bf16()
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    monkeypatch.setattr(prec, "_cpu_flags", lambda: {"avx512_bf16"})
    assert not prec.cpu_has_native_bf16()


def test_recorded_figures_follow_the_file(tmp_path, monkeypatch):
    net = apply_rule_weights(build_network("enhance", 8))
    path = save_network(net, tmp_path / "e.pt")
    loaded = load_network(path, "enhance")
    assert loaded.weights_sha256 == file_sha256(path)
    monkeypatch.setattr(prec, "cpu_has_native_bf16", lambda: True)
    assert network_precision(loaded, "auto", CPU).dtype is None  # no figure recorded
    monkeypatch.setattr(prec, "_records", lambda: {file_sha256(path): {"bf16_psnr_db": 47.0}})
    assert network_precision(loaded, "auto", CPU).dtype is torch.bfloat16
    assert network_precision(net, "auto", CPU).dtype is None  # no figure for the width-8 rule weights


def test_weights_built_in_memory_are_keyed_by_their_digest():
    """Rule weights carry the SHA-256 of their tensors; any change of a weight changes it."""
    one, two = (apply_rule_weights(build_network("enhance", 8)) for _ in range(2))
    assert one.weights_sha256 == two.weights_sha256 == state_sha256(two)
    with torch.no_grad():
        two.conv1.weight[0, 0, 0, 0, 0] += 1e-3
    assert state_sha256(two) != one.weights_sha256


def test_official_size_rule_network_defaults_to_bf16_by_its_record():
    """The benchmark's fixture-rule network (width 64) has a recorded figure of at least 45 dB."""
    net = apply_rule_weights(build_network("enhance", 64))
    record = prec.recorded_fidelity(net.weights_sha256)
    assert record is not None and record["name"] == "fixture-rule network E (width 64)"
    assert bf16_default(record) == Precision(torch.bfloat16)


def test_builtin_record_is_applied_by_its_rule():
    records = json.loads(resources.files("bmex_wf.data").joinpath("precision.json").read_text())["networks"]
    path = builtin_model_path()
    if path is None:
        pytest.skip("no built-in model in this installation")
    record = records.get(file_sha256(path))
    assert record is not None, "the built-in model's bf16 figures are not recorded"
    assert {"bf16_psnr_db", "bf16_tail32_psnr_db", "bf16_recon32_psnr_db", "command"} <= set(record)
    # measured: bf16 and bf16-tail32 stay below 45 dB, bf16-recon32 reaches it
    assert bf16_default(record) == Precision(torch.bfloat16, "recon")
    net = load_network(path, "enhance")
    native = network_precision(net, "auto", CPU)
    assert native.name == ("bf16-recon32" if prec.cpu_has_native_bf16() else "fp32")


@pytest.mark.parametrize("part", ["tail", "recon"])
def test_float32_parts_run_in_float32(part):
    net = apply_rule_weights(build_network("enhance", 8))
    x = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0)) * 900
    names = float32_part(net, part)
    assert "conv32_recon" in names and "conv32" not in names
    assert ("conv2_con" in names) == (part == "recon") and ("conv1_recon" in names) == (part == "recon")
    with torch.inference_mode():
        exact = net(x)[1]
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        low = net(x)[1]
        assert low.dtype is torch.bfloat16
        with float32_layers(net, part):
            seg, recon = net(x)
        assert recon.dtype is torch.float32 and seg.dtype is torch.bfloat16
        assert net.fp32_layers == frozenset()
    if part == "recon":  # only the segmentation trunk left in bf16: the recon is nearly exact
        rms = lambda t: float((t.float() - exact).pow(2).mean().sqrt())
        assert rms(recon) < 0.1 * rms(low)


def test_bf16_run_reports_its_precision_and_stays_close():
    net = apply_rule_weights(build_network("enhance", 8))
    rng = np.random.default_rng(0)
    vol = np.zeros((24, 24, 24), np.float32)
    vol[4:20, 4:20, 4:20] = rng.uniform(100, 900, (16, 16, 16))
    fp32 = enhance_volume(vol, net, device="cpu", precision="fp32", progress=False)[0]
    tail = run_enhancement(vol, net, device="cpu", precision="bf16-tail32", progress=False)
    assert tail.report["precision"] == "bf16-tail32"
    inside = vol > 0
    err = np.abs(tail.recon[inside] - fp32[inside]).max()
    assert 0 < err < 0.1 * fp32[inside].max()
