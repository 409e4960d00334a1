"""The BIDS App and ``enhance`` parsers: every option, its validator and error exits."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bmex_wf.cli.parser import get_parser, parse_args, parse_enhance_args


@pytest.fixture
def dirs(tmp_path):
    bids = tmp_path / "bids"
    bids.mkdir()
    return bids, tmp_path / "out"


def _args(dirs, *extra, level="participant"):
    return [str(dirs[0]), str(dirs[1]), level, *extra]


def _fails(capsys, argv, message, parse=parse_args):
    with pytest.raises(SystemExit) as exc:
        parse(argv)
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_defaults(dirs):
    opts = parse_args(_args(dirs))
    assert opts.bids_dir == dirs[0] and opts.output_dir == dirs[1]
    assert opts.analysis_level == "participant"
    assert (opts.device, opts.precision, opts.tiling, opts.brain_mask_source) == ("auto", "auto", "fast", "auto")
    assert opts.output_resolution == "auto"
    for flag in ("skip_bids_validation", "reports_only", "stop_on_first_crash", "write_graph",
                 "boilerplate_only", "resource_monitor", "clean_workdir", "write_provenance"):
        assert getattr(opts, flag) is False
    for name in ("participant_label", "session_label", "bids_filters", "derivatives", "nprocs",
                 "omp_nthreads", "mem_gb", "use_plugin", "models_dir", "age_months", "work_dir",
                 "config_file"):
        assert getattr(opts, name) is None
    assert opts.verbose == 0


@pytest.mark.parametrize("flag", ["--skip-bids-validation", "--skip_bids_validation", "--reports-only",
                                  "--stop-on-first-crash", "--write-graph", "--boilerplate-only",
                                  "--boilerplate", "--resource-monitor", "--clean-workdir",
                                  "--write-provenance"])
def test_switches(dirs, flag):
    dest = {"--skip_bids_validation": "skip_bids_validation", "--boilerplate": "boilerplate_only"}.get(
        flag, flag.lstrip("-").replace("-", "_"))
    assert getattr(parse_args(_args(dirs, flag)), dest) is True


def test_labels(dirs, capsys):
    opts = parse_args(_args(dirs, "--participant-label", "sub-01", "02", "--session-label", "ses-A", "B"))
    assert opts.participant_label == ["01", "02"] and opts.session_label == ["A", "B"]
    assert parse_args(_args(dirs, "--participant_label", "03")).participant_label == ["03"]
    _fails(capsys, _args(dirs, "--participant-label", "sub-0_1"), "invalid sub label")
    _fails(capsys, _args(dirs, "--session-label", "a b"), "invalid ses label")
    _fails(capsys, _args(dirs, "--participant-label"), "expected at least one argument")


def test_numbers(dirs, capsys):
    opts = parse_args(_args(dirs, "--nprocs", "4", "--omp-nthreads", "2", "--mem-gb", "7.5"))
    assert (opts.nprocs, opts.omp_nthreads, opts.mem_gb) == (4, 2, 7.5)
    assert parse_args(_args(dirs, "--n-cpus", "3")).nprocs == 3
    assert parse_args(_args(dirs, "--mem_gb", "2")).mem_gb == 2.0
    for flag, value in (("--nprocs", "0"), ("--nprocs", "two"), ("--omp-nthreads", "-1"),
                        ("--mem-gb", "0"), ("--nprocs", "1.5")):
        _fails(capsys, _args(dirs, flag, value), "expected a positive number")
    _fails(capsys, _args(dirs, "--nprocs", "2", "--omp-nthreads", "4"), "exceeds --nprocs")


@pytest.mark.parametrize("flag,good,bad", [
    ("--device", ["auto", "cpu", "cuda"], "gpu"),
    ("--precision", ["auto", "fp32", "fp16", "bf16"], "double"),
    ("--tiling", ["fast", "upstream"], "slow"),
    ("--brain-mask-source", ["auto", "lifespanstrip", "nonzero", "template"], "bet"),
    ("--output-resolution", ["auto", "native", "network"], "0.8"),
])
def test_choices(dirs, capsys, flag, good, bad):
    dest = flag.lstrip("-").replace("-", "_")
    for value in good:
        assert getattr(parse_args(_args(dirs, flag, value)), dest) == value
    _fails(capsys, _args(dirs, flag, bad), "invalid choice")


def test_age(dirs, capsys):
    assert parse_args(_args(dirs, "--age-months", "18")).age_months == "18"
    assert parse_args(_args(dirs, "--age-months", "Fetal")).age_months == "fetal"
    assert parse_args(_args(dirs, "--age-months", "-2.5")).age_months == "-2.5"
    _fails(capsys, _args(dirs, "--age-months", "old"), "number of months")
    _fails(capsys, _args(dirs, "--age-months", "5000"), "out of range")


def test_paths(dirs, tmp_path, capsys):
    models = tmp_path / "models"
    models.mkdir()
    opts = parse_args(_args(dirs, "--models-dir", str(models), "-w", str(tmp_path / "w"),
                            "--derivatives", str(models), str(tmp_path)))
    assert opts.models_dir == models and opts.work_dir == tmp_path / "w"
    assert opts.derivatives == [models, tmp_path]
    assert parse_args(_args(dirs, "--work-dir", "rel")).work_dir == Path("rel").absolute()
    _fails(capsys, _args(dirs, "--models-dir", str(tmp_path / "nope")), "directory does not exist")
    _fails(capsys, _args(dirs, "--derivatives", str(tmp_path / "nope")), "directory does not exist")
    _fails(capsys, [str(tmp_path / "nobids"), str(dirs[1]), "participant"], "directory does not exist")
    _fails(capsys, _args(dirs, level="preprocess"), "invalid choice")
    _fails(capsys, [str(dirs[0]), str(dirs[0]), "participant"], "OUTPUT_DIR must not be")
    _fails(capsys, [str(dirs[0]), str(dirs[0] / "out"), "participant"], "OUTPUT_DIR must not be")
    assert parse_args([str(dirs[0]), str(dirs[0] / "derivatives/bmex"), "participant"])
    _fails(capsys, _args(dirs, "-w", str(dirs[0] / "work")), "--work-dir must not be inside")
    _fails(capsys, _args(dirs, "--brain-mask-source", "precomputed"), "needs --derivatives")
    assert parse_args(_args(dirs, "--brain-mask-source", "precomputed", "--derivatives", str(models)))


def test_bids_filter_file(dirs, tmp_path, capsys):
    good = tmp_path / "filters.json"
    good.write_text(json.dumps({"t2w": {"acquisition": "fast"}}))
    assert parse_args(_args(dirs, "--bids-filter-file", str(good))).bids_filters == {"t2w": {"acquisition": "fast"}}
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    _fails(capsys, _args(dirs, "--bids-filter-file", str(bad)), "not a readable JSON")
    _fails(capsys, _args(dirs, "--bids-filter-file", str(tmp_path / "absent.json")), "file does not exist")


def test_use_plugin(dirs, tmp_path, capsys):
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: SLURMGraph\nplugin_args:\n  sbatch_args: -p short\n")
    assert parse_args(_args(dirs, "--use-plugin", str(plugin))).use_plugin == plugin
    for text, message in (("plugin_args: {}\n", "expected 'plugin:"),
                          ("plugin: Magic\n", "unknown Nipype plugin"),
                          ("plugin: Linear\nplugin_args: [1]\n", "must be a mapping"),
                          ("plugin: [\n", "not a readable YAML")):
        plugin.write_text(text)
        _fails(capsys, _args(dirs, "--use-plugin", str(plugin)), message)


def test_verbose_and_version(dirs, capsys):
    assert parse_args(_args(dirs, "-vv")).verbose == 2
    with pytest.raises(SystemExit) as exc:
        get_parser().parse_args(["--version"])
    assert exc.value.code == 0
    from bmex_wf import __version__

    assert __version__ in capsys.readouterr().out


def test_config_file_reload(dirs, tmp_path, capsys):
    from bmex_wf.cli.config import RunConfig

    opts = parse_args(_args(dirs, "--nprocs", "3", "--tiling", "upstream", "--participant-label", "01",
                            "--age-months", "fetal", "--stop-on-first-crash"))
    cfg = RunConfig.from_namespace(opts)
    cfg.work_dir = tmp_path / "w"
    path = cfg.write()
    assert path == tmp_path / "w/config.toml"
    reloaded = parse_args(_args(dirs, "--config-file", str(path), "--nprocs", "2"))
    assert reloaded.nprocs == 2  # the command line wins
    assert (reloaded.tiling, reloaded.participant_label, reloaded.age_months) == ("upstream", ["01"], "fetal")
    assert reloaded.stop_on_first_crash is True and reloaded.work_dir == tmp_path / "w"
    again = RunConfig.load(path)
    assert again.to_dict() == cfg.to_dict()
    assert cfg.to_dict()["workflow"]["output_resolution"] == "auto"  # the default, saved
    cfg.output_resolution = "network"
    cfg.write()
    assert parse_args(_args(dirs, "--config-file", str(path))).output_resolution == "network"
    path.write_text("[execution]\nbogus = 1\n")
    _fails(capsys, _args(dirs, "--config-file", str(path)), "unknown setting")
    path.write_text("[execution\n")
    _fails(capsys, _args(dirs, "--config-file", str(path)), "not a readable config.toml")


# --------------------------------------------------------------------------- enhance
def test_enhance_parser(tmp_path, capsys):
    image = tmp_path / "head_T2w.nii.gz"
    image.write_bytes(b"")
    mask = tmp_path / "mask.nii.gz"
    mask.write_bytes(b"")
    out = str(tmp_path / "out")
    opts = parse_enhance_args([str(image), out, "--age-months", "3"])
    assert opts.contrast == "T2w" and opts.brain_mask_source == "auto" and opts.mask is None
    assert opts.output_resolution == "auto"
    assert parse_enhance_args([str(image), out, "--age-months", "3", "--output-resolution",
                               "native"]).output_resolution == "native"
    opts = parse_enhance_args([str(image), out, "--age-months", "3", "--contrast", "T1w",
                               "--mask", str(mask), "--device", "cpu", "--nprocs", "2"])
    assert (opts.contrast, opts.brain_mask_source, opts.mask, opts.nprocs) == ("T1w", "precomputed", mask, 2)
    other = tmp_path / "head.nii"
    other.write_bytes(b"")
    _fails(capsys, [str(other), out, "--age-months", "3"], "pass --contrast", parse_enhance_args)
    _fails(capsys, [str(image), out], "--age-months", parse_enhance_args)
    _fails(capsys, [str(tmp_path / "x.nii.gz"), out, "--age-months", "3"], "file does not exist", parse_enhance_args)
    _fails(capsys, [str(mask.with_suffix(".txt")), out, "--age-months", "3"], "file does not exist", parse_enhance_args)
    text = tmp_path / "notes.txt"
    text.write_text("x")
    _fails(capsys, [str(text), out, "--age-months", "3"], "not a NIfTI", parse_enhance_args)
    _fails(capsys, [str(image), out, "--age-months", "3", "--mask", str(mask), "--brain-mask-source", "nonzero"],
           "conflicts", parse_enhance_args)
    _fails(capsys, [str(image), out, "--age-months", "3", "--brain-mask-source", "precomputed"],
           "needs --mask", parse_enhance_args)


def test_dispatch_subcommands(dirs, monkeypatch):
    from bmex_wf.cli import enhance, participant, run

    calls = []
    monkeypatch.setattr(participant, "bids_app_main", lambda argv: calls.append(("app", argv)) or 0)
    monkeypatch.setattr(enhance, "enhance_main", lambda argv: calls.append(("enhance", argv)) or 0)
    run.main(["enhance", "x"])
    run.main(["enhancer", "y", "participant"])
    assert calls == [("enhance", ["x"]), ("app", ["enhancer", "y", "participant"])]
