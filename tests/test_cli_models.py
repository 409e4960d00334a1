"""``bmex-wf models`` and the subcommand dispatch."""

import pytest
import torch

from bmex_wf.cli.run import main
from bmex_wf.models.registry import enhance_entry, file_sha256


def test_models_table_reports_found_and_missing(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BMEX_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    torch.save({"x": torch.zeros(3)}, tmp_path / "BMEX-Month24-T1-model.pt")
    torch.save({"x": torch.zeros(3)}, tmp_path / "BMEX-Fetal-T2-model.pt")
    (tmp_path / "T1T2w-model.pt").write_bytes(b"0" * 2_000_000)
    assert main(["models", "--models-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    lines = {line.split("  ")[0]: line for line in out.splitlines()}
    assert "found" in lines["Month24 T1w"] and str(tmp_path) in lines["Month24 T1w"]
    assert "found" in lines["Fetal T2w"]
    assert "missing" in lines["Month24 T2w"]
    assert "2.0 MB" in lines["LifespanStrip"]
    assert "missing" in lines["LifespanStrip template"]
    assert "3 of 17 official files found." in out
    assert "Built-in (all groups)" in out
    # 15 enhancement rows: fetal T2w + 7 month groups x 2 contrasts
    assert sum(line.startswith(("Month", "Fetal")) for line in out.splitlines()) == 15


def test_models_checksum_status(tmp_path, capsys, monkeypatch):
    from bmex_wf.models import registry

    path = tmp_path / "BMEX-Month3-T2-model.pt"
    path.write_bytes(b"weights")
    entry = enhance_entry("Month3", "T2w")
    assert registry.checksum_status(entry, path) == "not recorded"
    good = entry.__class__(**{**entry.__dict__, "sha256": file_sha256(path)})
    bad = entry.__class__(**{**entry.__dict__, "sha256": "0" * 64})
    assert registry.checksum_status(good, path) == "ok"
    assert registry.checksum_status(bad, path) == "MISMATCH"


def test_env_dir_is_searched_after_explicit_dir(tmp_path, monkeypatch):
    from bmex_wf.models.registry import find_file

    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    (second / "T1T2w-model.pt").write_bytes(b"x")
    monkeypatch.setenv("BMEX_MODELS_DIR", str(second))
    assert find_file("T1T2w-model.pt", first) == second / "T1T2w-model.pt"
    (first / "T1T2w-model.pt").write_bytes(b"y")
    assert find_file("T1T2w-model.pt", first) == first / "T1T2w-model.pt"


def test_help_and_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    assert "BIDS" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0


def test_models_named_directory_is_a_bids_dir(tmp_path, monkeypatch, capsys):
    # "./models" is not the subcommand: it is parsed as the BIDS directory
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    with pytest.raises(SystemExit) as exc:
        main(["./models"])
    assert exc.value.code == 2
    assert "the following arguments are required" in capsys.readouterr().err


def test_unknown_contrast_and_group():
    with pytest.raises(ValueError, match="unknown contrast"):
        enhance_entry("Month3", "FLAIR")
    with pytest.raises(ValueError, match="no T1w model for age group Fetal"):
        enhance_entry("Fetal", "T1w")


def test_resolve_prefers_official_and_refuses_mixing(tmp_path, monkeypatch):
    from bmex_wf.models import registry

    monkeypatch.delenv("BMEX_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    official = tmp_path / "BMEX-Month9-T1-model.pt"
    official.write_bytes(b"x")
    chosen = registry.resolve_enhance_model("Month9", "T1w", tmp_path)
    assert chosen.path == official and not chosen.builtin
    with pytest.raises(FileNotFoundError, match="BMEX-Month12-T2-model.pt.*other official models"):
        registry.resolve_enhance_model("Month12", "T2w", tmp_path)


def test_resolve_falls_back_to_builtin_only_without_official(tmp_path, monkeypatch):
    from bmex_wf.models import registry

    monkeypatch.delenv("BMEX_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fake = tmp_path / "builtin.pt"
    fake.write_bytes(b"x")
    monkeypatch.setattr(registry, "builtin_model_path", lambda: fake)
    chosen = registry.resolve_enhance_model("Fetal", "T2w", tmp_path)
    assert chosen.builtin and chosen.path == fake and chosen.entry.template == "Template-Fetal-T2w"
    monkeypatch.setattr(registry, "builtin_model_path", lambda: None)
    with pytest.raises(FileNotFoundError, match="no BME-X model weights found"):
        registry.resolve_enhance_model("Fetal", "T2w", tmp_path)


def test_demo_and_train_subcommands_dispatch(monkeypatch):
    import bmex_wf.training.cli as train
    from bmex_wf.cli import demo

    calls = []
    monkeypatch.setattr(demo, "main", lambda argv: calls.append(("demo", argv)) or 0)
    monkeypatch.setattr(train, "main", lambda argv: calls.append(("train", argv)) or 0)
    assert main(["demo", "out"]) == 0 and main(["train", "--help"]) == 0
    assert calls == [("demo", ["out"]), ("train", ["--help"])]


def test_train_help_lists_width(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["train", "--help"])
    assert exc.value.code == 0 and "--width" in capsys.readouterr().out
