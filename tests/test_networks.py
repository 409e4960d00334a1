"""Networks E and S: fixture identity, checkpoint names, widths and input sizes."""

import json

import numpy as np
import pytest
import torch

from bmex_wf.models import build_network
from bmex_wf.testing.rule_weights import rule_state_dict, tensor_sha256

from .helpers import rule_network

CASES = {
    "enhance": ("bmex", "bmex_input_40", ["bmex_expected_seg_40", "bmex_expected_recon_40"], 2e-2),
    "skullstrip": ("strip", "strip_input_64", ["strip_expected_64"], 2e-6),
}


def _manifest(fixtures_dir, prefix):
    return json.loads((fixtures_dir / f"{prefix}_state_dict_manifest.json").read_text())


@pytest.mark.parametrize("kind", sorted(CASES))
def test_rule_weights_match_fixture_hashes(kind, fixtures_dir):
    prefix = CASES[kind][0]
    manifest = _manifest(fixtures_dir, prefix)
    state = rule_state_dict({key: shape for key, shape, _ in manifest})
    hashes = dict(json.loads((fixtures_dir / f"{prefix}_weight_sha256.json").read_text()))
    wrong = [key for key, tensor in state.items() if tensor_sha256(tensor) != hashes[key]]
    assert not wrong, f"fixture rule differs for {wrong[:5]}"


@pytest.mark.parametrize("kind", sorted(CASES))
def test_state_dict_keys_shapes_and_order_match_manifest(kind, fixtures_dir):
    manifest = _manifest(fixtures_dir, CASES[kind][0])
    state = build_network(kind).state_dict()
    assert [(k, list(v.shape), str(v.dtype).replace("torch.", "")) for k, v in state.items()] == [
        (k, s, d) for k, s, d in manifest
    ]


@pytest.mark.parametrize("kind", sorted(CASES))
def test_network_reproduces_upstream_fixture(kind, fixtures_dir):
    _, inp, outputs, tol = CASES[kind]
    torch.manual_seed(0)
    net = rule_network(kind, None)
    x = torch.from_numpy(np.load(fixtures_dir / f"{inp}.npy"))
    with torch.inference_mode():
        result = net(x)
    result = result if isinstance(result, tuple) else (result,)
    assert len(result) == len(outputs)
    for tensor, name in zip(result, outputs):
        expected = np.load(fixtures_dir / f"{name}.npy")
        assert tensor.shape == expected.shape
        diff = np.abs(tensor.numpy() - expected).max()
        assert diff <= tol, f"{name}: max abs diff {diff} > {tol}"


def test_official_parameter_counts():
    count = lambda net: sum(p.numel() for p in net.parameters())
    assert count(build_network("enhance")) == 32_929_311
    assert count(build_network("skullstrip")) == 4_110_068


@pytest.mark.parametrize("width", [8, 16, 24])
def test_smaller_widths_follow_family_convention(width):
    net = build_network("enhance", width)
    state = net.state_dict()
    assert state["conv1.weight"].shape[0] == width
    assert state["conv1_con.weight"].shape[:2] == (width // 2, 4)
    assert state["conv2_con.weight"].shape[:2] == (width // 2, 1)
    assert state["conv1_recon.weight"].shape[:2] == (width, width)
    assert state["conv3.weight"].shape[0] == width // 4
    assert state["conv7.weight"].shape[0] == width // 2
    assert set(state) == set(build_network("enhance").state_dict())


@pytest.mark.parametrize("width", [0, 12, 20, -8])
def test_invalid_width_rejected(width):
    with pytest.raises(ValueError, match="multiple of 8"):
        build_network("enhance", width)


def test_unknown_kind_rejected():
    with pytest.raises(ValueError, match="unknown network kind"):
        build_network("segment")


@pytest.mark.parametrize("shape", [(8, 8, 8), (16, 24, 8), (48, 40, 56)])
def test_valid_noncubic_sizes_keep_shape(shape):
    net = rule_network("enhance")
    x = torch.rand(2, 1, *shape) * 500
    with torch.inference_mode():
        seg, recon = net(x)
        seg0, recon0 = net(x[:1])
    assert seg.shape == (2, 4, *shape) and recon.shape == (2, 1, *shape)
    assert (seg >= 0).all() and (recon >= 0).all()
    # batch elements are independent in eval mode
    torch.testing.assert_close(seg[:1], seg0, rtol=1e-3, atol=2e-3)
    torch.testing.assert_close(recon[:1], recon0, rtol=1e-3, atol=2e-3)


@pytest.mark.parametrize("shape", [(1, 40, 40, 42), (1, 1, 36, 40, 40), (1, 1, 12, 16, 16)])
def test_invalid_sizes_rejected_clearly(shape):
    net = build_network("skullstrip", 8)
    with pytest.raises(ValueError, match="multiples of 8|5-D"):
        net(torch.zeros(shape))


def test_skullstrip_outputs_probabilities():
    net = rule_network("skullstrip")
    with torch.inference_mode():
        probs = net(torch.rand(1, 1, 16, 16, 24) * 0.1)
    torch.testing.assert_close(probs.sum(1), torch.ones(1, 16, 16, 24))
