"""Strict checkpoint loading and its error messages."""

import pytest
import torch

from bmex_wf.models import CheckpointError, build_network, load_network, save_network

from .helpers import rule_network


@pytest.fixture(scope="module")
def small_state():
    return rule_network("enhance").state_dict()


def test_official_style_plain_state_dict_loads(tmp_path, small_state):
    path = tmp_path / "BMEX-Month24-T1-model.pt"
    torch.save(small_state, path)
    net = load_network(path, "enhance")
    assert net.width == 8 and not net.training
    for key, value in net.state_dict().items():
        torch.testing.assert_close(value, small_state[key])


def test_official_size_network_loads_and_infers_width(tmp_path):
    state = build_network("skullstrip").state_dict()
    path = tmp_path / "T1T2w-model.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    net = load_network(path, "skullstrip")
    assert net.width == 32


def test_half_precision_storage_loads_as_float32(tmp_path, small_state):
    net = build_network("enhance", 8)
    net.load_state_dict(small_state)
    path = save_network(net, tmp_path / "small.pt", half=True)
    loaded = load_network(path, "enhance")
    assert loaded.conv1.weight.dtype == torch.float32
    torch.testing.assert_close(loaded.conv1.weight, small_state["conv1.weight"], atol=1e-3, rtol=1e-3)


def _broken(tmp_path, small_state, change):
    state = dict(small_state)
    change(state)
    path = tmp_path / "broken-model.pt"
    torch.save(state, path)
    return path


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda s: s.pop("bn19_recon.running_var"), "missing keys: bn19_recon.running_var"),
        (lambda s: s.update({"conv99.weight": torch.zeros(1)}), "unexpected keys: conv99.weight"),
        (lambda s: s.update({"conv7.weight": torch.zeros(3, 8, 3, 3, 3)}), "wrong shapes: conv7.weight"),
    ],
)
def test_mismatching_state_dict_names_file_and_keys(tmp_path, small_state, change, message):
    path = _broken(tmp_path, small_state, change)
    with pytest.raises(CheckpointError, match=message) as err:
        load_network(path, "enhance")
    assert str(path) in str(err.value)


def test_wrong_kind_is_reported(tmp_path, small_state):
    path = tmp_path / "T1T2w-model.pt"
    torch.save(small_state, path)
    with pytest.raises(CheckpointError, match="unexpected keys"):
        load_network(path, "skullstrip")


def test_truncated_file(tmp_path, small_state):
    path = tmp_path / "BMEX-Month9-T2-model.pt"
    torch.save(small_state, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint") as err:
        load_network(path, "enhance")
    assert str(path) in str(err.value)


def test_text_file(tmp_path):
    path = tmp_path / "BMEX-Month9-T2-model.pt"
    path.write_text("<html>404 Not Found</html>\n")
    with pytest.raises(CheckpointError, match=str(path)):
        load_network(path, "enhance")


def test_missing_file(tmp_path):
    path = tmp_path / "nothing.pt"
    with pytest.raises(CheckpointError, match="not found") as err:
        load_network(path, "enhance")
    assert str(path) in str(err.value)


def test_non_state_dict_pickle(tmp_path):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="does not hold a state dict"):
        load_network(path, "enhance")
