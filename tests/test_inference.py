"""Whole-volume inference: stitching exactness, release scheme, devices, bad inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from bmex_wf.models.geometry import default_geometry, parse_geometry
from bmex_wf.models.inference import (
    enhance_grid,
    enhance_volume,
    resolve_device,
    run_enhancement,
    skullstrip_volume,
)
from bmex_wf.models.networks import build_network, check_input_shape
from bmex_wf.models.placement import fit_grid
from bmex_wf.models.tiling import dilate_mask, extract_tile, upstream_grid
from bmex_wf.testing.rule_weights import apply_rule_weights


class LocalStub(nn.Module):
    """Network-E stand-in whose every output voxel depends on its input voxel only."""

    width = 8

    def __init__(self, recon_ones: bool = False):
        super().__init__()
        self.recon_ones = recon_ones
        self.calls: list[tuple] = []
        self.threads: list[int] = []

    def forward(self, x):
        check_input_shape(x.shape)
        self.calls.append(tuple(x.shape))
        self.threads.append(torch.get_num_threads())
        seg = torch.cat([x, 2 * x, x + 1, 0.5 * x], 1)
        return seg, torch.ones_like(x) if self.recon_ones else x.clone()


class StripStub(nn.Module):
    """Network-S stand-in: a voxel-wise softmax of fixed functions of the input."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []

    @staticmethod
    def probs(x):
        return torch.softmax(torch.cat([x, -x, 2 * x, 0 * x], 1), dim=1)

    def forward(self, x):
        check_input_shape(x.shape)
        self.calls.append(tuple(x.shape))
        return self.probs(x)


def _brain(shape=(70, 84, 62)):
    """A linear function of the coordinates inside an ellipsoid (zero outside), and its mask."""
    idx = np.indices(shape, dtype=np.float32)
    centre = [(n - 1) / 2 for n in shape]
    radii = [0.4 * n for n in shape]
    mask = sum(((g - c) / r) ** 2 for g, c, r in zip(idx, centre, radii)) <= 1.0
    linear = 100.0 + 3.0 * idx[0] + 2.0 * idx[1] + 1.5 * idx[2]
    return np.where(mask, linear, 0.0).astype(np.float32), mask


def test_fast_stitching_is_exact_and_seamless():
    vol, mask = _brain()
    stub = LocalStub()
    recon, scores = enhance_volume(vol, stub, mask=mask, device="cpu", progress=False)
    assert recon.dtype == np.float32 and scores.dtype == np.float32
    assert recon.shape == vol.shape and scores.shape == (4, *vol.shape)
    region = dilate_mask(mask, default_geometry("cpu").dilation)
    np.testing.assert_array_equal(recon[region], vol[region])
    np.testing.assert_array_equal(scores[2][region], vol[region] + 1)
    np.testing.assert_array_equal(scores[3][region], 0.5 * vol[region])
    grid = fit_grid(mask, default_geometry("cpu"))
    covered = grid.coverage() > 0
    assert (recon[~covered] == 0).all() and (scores[:, ~covered] == 0).all()
    # every tile goes through the network once, each of a valid size
    assert sum(shape[0] for shape in stub.calls) == len(grid)
    assert sorted(shape[2:] for shape in stub.calls for _ in range(shape[0])) == \
        sorted(grid.size_of(i) for i in range(len(grid)))
    assert all(n % 8 == 0 for shape in stub.calls for n in shape[2:])


def test_upstream_averages_with_release_counter():
    vol, mask = _brain()
    recon, _ = enhance_volume(vol, LocalStub(recon_ones=True), mask=mask, tiling="upstream",
                              device="cpu", progress=False)
    count = upstream_grid(vol).coverage().astype(np.float32)
    expected = count / (count + np.float32(1e-5))
    np.testing.assert_allclose(recon, expected, rtol=1e-6)
    assert count[mask].min() >= 1 and count[mask].max() == 8


def test_fast_equals_upstream_for_local_network():
    vol, mask = _brain()
    fast = enhance_volume(vol, LocalStub(), mask=mask, device="cpu", progress=False)
    release = enhance_volume(vol, LocalStub(), mask=mask, tiling="upstream", device="cpu",
                             progress=False)
    for a, b in zip(fast, release):
        # identical up to the release's 1e-5 offset on its visit counter
        np.testing.assert_allclose(a[..., mask], b[..., mask], rtol=2e-5)


def test_default_mask_is_positive_voxels():
    vol, mask = _brain()
    with_mask = enhance_volume(vol, LocalStub(), mask=mask, device="cpu", progress=False)
    without = enhance_volume(vol, LocalStub(), device="cpu", progress=False)
    np.testing.assert_array_equal(with_mask[0], without[0])


def test_real_network_single_tile_matches_direct_call():
    net = apply_rule_weights(build_network("enhance", 8))
    rng = np.random.default_rng(3)
    vol = np.zeros((30, 26, 20), np.float32)
    vol[4:26, 3:23, 2:18] = rng.uniform(50, 900, (22, 20, 16))
    recon, scores = enhance_volume(vol, net, device="cpu", precision="fp32", progress=False)
    grid, _ = enhance_grid(vol, None, "fast")
    assert len(grid) == 1
    start, size = grid.starts[0], grid.size_of(0)
    with torch.inference_mode():
        seg, rec = net(torch.from_numpy(extract_tile(vol, start, size))[None, None])
    box, loc = grid.keep_box(start, size)
    np.testing.assert_allclose(recon[box], rec[0, 0].numpy()[loc], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(scores[(slice(None), *box)], seg[0].numpy()[(slice(None), *loc)],
                               rtol=1e-5, atol=1e-4)
    assert np.isfinite(recon).all() and (recon >= 0).all()


@pytest.mark.parametrize("width, expected", [(8, 2), (64, 1)])
def test_cpu_pairs_tiles_for_compact_networks(width, expected):
    vol, mask = _brain()
    stub = LocalStub()
    stub.width = width
    enhance_volume(vol, stub, mask=mask, device="cpu", progress=False)
    assert len(stub.calls) > 1
    assert max(shape[0] for shape in stub.calls) == expected


def test_paired_tiles_match_single_tiles_with_real_network():
    net = apply_rule_weights(build_network("enhance", 8))
    vol, mask = _brain((30, 30, 50))
    cubes = "cubes-24-m4-d2"
    paired = enhance_volume(vol, net, mask=mask, geometry=cubes, device="cpu", precision="fp32",
                            progress=False)
    single = enhance_volume(vol, net, mask=mask, geometry=cubes, device="cpu", precision="fp32",
                            progress=False, batch_size=1)
    assert len(enhance_grid(vol, mask, "fast", parse_geometry(cubes))[0]) > 1
    for a, b in zip(paired, single):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_threads_restored_and_progress_silent(capsys):
    vol, mask = _brain((30, 30, 30))
    stub = LocalStub()
    before = torch.get_num_threads()
    enhance_volume(vol, stub, mask=mask, device="cpu", num_threads=1, progress=False)
    assert set(stub.threads) == {1}
    assert torch.get_num_threads() == before
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_skullstrip_windows_average_exactly():
    rng = np.random.default_rng(0)
    vol = rng.uniform(0, 0.1, (70, 64, 40)).astype(np.float32)
    stub = StripStub()
    probs = skullstrip_volume(vol, stub, device="cpu", progress=False)
    assert probs.shape == (4, 70, 64, 40) and probs.dtype == np.float32
    # axis 0: starts 0 and 6 (clamped); axis 2 padded to 64; up to 4 windows per pass
    assert stub.calls == [(2, 1, 64, 64, 64)]
    direct = StripStub.probs(torch.from_numpy(vol)[None, None])[0].numpy()
    np.testing.assert_allclose(probs, direct, rtol=1e-6, atol=1e-7)


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_report_records_geometry_and_settings():
    vol, mask = _brain()
    result = run_enhancement(vol, LocalStub(), mask=mask, device="cpu", precision="fp32",
                             progress=False)
    report = result.report
    grid = fit_grid(mask, default_geometry("cpu"))
    assert report["geometry"] == default_geometry("cpu").name and report["tiling"] == "fast"
    spec = default_geometry("cpu")
    assert (report["placement"], report["tile"], report["margin"]) == (spec.placement, spec.tile, spec.margin)
    assert report["tiles"] == len(grid) and report["voxels_computed"] == grid.voxels()
    assert report["brain_voxels"] == int(mask.sum()) and report["uncovered_brain_voxels"] == 0
    assert report["work_ratio"] == pytest.approx(grid.voxels() / mask.sum(), abs=1e-3)
    assert report["device"] == "cpu" and report["precision"] == "fp32"
    release = run_enhancement(vol, LocalStub(), mask=mask, tiling="upstream", device="cpu",
                              progress=False).report
    assert release["geometry"] == "release" and release["tiles"] == len(upstream_grid(vol))


@pytest.mark.parametrize(
    ("volume", "mask", "message"),
    [
        (np.ones((10, 10), np.float32), None, "3-D"),
        (np.ones((10, 10, 10, 2), np.float32), None, "3-D"),
        (np.full((10, 10, 10), np.nan, np.float32), None, "NaN"),
        (np.ones((10, 10, 10), np.float32), np.zeros((10, 10, 10)), "empty"),
        (np.ones((10, 10, 10), np.float32), np.ones((10, 10, 9)), "shape"),
        (np.zeros((10, 10, 10), np.float32), None, "positive"),
    ],
)
def test_bad_inputs_raise(volume, mask, message):
    with pytest.raises(ValueError, match=message):
        enhance_volume(volume, LocalStub(), mask=mask, device="cpu", progress=False)


def test_bad_options_raise():
    vol, _ = _brain((20, 20, 20))
    with pytest.raises(ValueError, match="tiling"):
        enhance_volume(vol, LocalStub(), tiling="giant", device="cpu", progress=False)
    with pytest.raises(ValueError, match="num_threads"):
        enhance_volume(vol, LocalStub(), num_threads=0, device="cpu", progress=False)
    with pytest.raises(ValueError, match="3-D"):
        skullstrip_volume(np.ones((64, 64)), StripStub(), device="cpu", progress=False)
