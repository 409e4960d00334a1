"""The participant-level BIDS App and ``bmex-wf enhance``.

Orchestration (discovery, ages, plugins, failure isolation, crash files, exit codes, summary,
config.toml) is tested with a stand-in for ``init_bmex_wf`` on a small synthetic dataset; the
real workflow runs end to end on two subjects of the shared dataset with small rule-weight
networks.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import nibabel as nb
import numpy as np
import pytest

from bmex_wf.bids.derivatives import OUTPUT_KEYS, derivative_names
from bmex_wf.cli import group as cli_group
from bmex_wf.cli import parser, reporting
from bmex_wf.cli.run import main as cli_main


# --------------------------------------------------------------------------- stand-in workflow
def _fake_outputs(in_file, contrast, fail_on):
    """Copy the input into every output; fail for files named like ``fail_on``."""
    import json
    import os

    import nibabel as nb
    import numpy as np

    if fail_on and fail_on in os.path.basename(in_file):
        raise RuntimeError(f"synthetic failure for {os.path.basename(in_file)}")
    flags = os.environ.get("BMEX_TEST_FLAGS")  # test_interrupted_run: hold here while asked to
    if flags:
        import time

        with open(os.path.join(flags, "worker.pid"), "w") as handle:
            handle.write(str(os.getpid()))
        while os.path.exists(os.path.join(flags, "sleep")):
            time.sleep(0.2)
    img = nb.load(in_file)
    data = np.asarray(img.dataobj, dtype="float32")
    outs = []
    for name in ("enh", "brain", "mask", "dseg", "csf", "gm", "wm"):
        path = os.path.abspath(f"{name}.nii.gz")
        nb.Nifti1Image(data, img.affine).to_filename(path)
        outs.append(path)
    qc = os.path.abspath("qc.json")
    with open(qc, "w") as handle:
        json.dump({"QI": 1.0, "contrast": contrast}, handle)
    return outs[0], outs[1], outs[2], outs[3], outs[4:], 1.0, qc


def _fake_init_bmex_wf(fail_on=None):
    def init_bmex_wf(*, age_months, contrast, models_dir=None, mask_source="auto",
                     use_gpu=False, omp_nthreads=1, tiling="fast", precision="auto",
                     age_source="given", output_resolution="native", input_zooms=None,
                     name="bmex_wf"):
        from nipype.interfaces import utility as niu
        from nipype.pipeline import engine as pe
        from niworkflows.engine.workflows import LiterateWorkflow

        from bmex_wf.age import age_group
        from bmex_wf.resolution import resolve_output_resolution
        from bmex_wf.workflows.network_grid import NETWORK_GRID_FIELDS, NETWORK_GRID_OUTPUTS

        wf = LiterateWorkflow(name=name)
        wf.__desc__ = "Images were enhanced with BME-X (stand-in).\n"
        inputnode = pe.Node(niu.IdentityInterface(fields=["in_file", "in_mask"]), name="inputnode")
        outputnode = pe.Node(niu.IdentityInterface(fields=[
            "enhanced", "enhanced_brain", "brain_mask", "dseg", "probsegs", "qi", "age_group",
            "model_file", "qc", *NETWORK_GRID_OUTPUTS]), name="outputnode")
        run = pe.Node(niu.Function(
            function=_fake_outputs, input_names=["in_file", "contrast", "fail_on"],
            output_names=["enhanced", "enhanced_brain", "brain_mask", "dseg", "probsegs", "qi",
                          "qc"]), name="enhance")
        run.inputs.contrast, run.inputs.fail_on = contrast, fail_on
        outputnode.inputs.age_group = age_group(age_months)
        outputnode.inputs.model_file = "stand-in.pt"
        wf.connect([(inputnode, run, [("in_file", "in_file")]),
                    (run, outputnode, [(f, f) for f in ("enhanced", "enhanced_brain",
                                                         "brain_mask", "dseg", "probsegs",
                                                         "qi", "qc")])])
        if resolve_output_resolution(output_resolution, input_zooms) == "network":
            wf.connect([(run, outputnode, list(zip(NETWORK_GRID_FIELDS, NETWORK_GRID_OUTPUTS)))])
        return wf

    return init_bmex_wf


def _without_model(factory):
    """The stand-in for ``init_bmex_model_wf``: the resolved model is not needed."""
    return lambda *, model, **kwargs: factory(**kwargs)


def _fake_base_module(factory):
    """A ``bmex_wf.workflows.base`` stand-in module with both factories."""
    module = types.ModuleType("bmex_wf.workflows.base")
    module.init_bmex_wf, module.init_bmex_model_wf = factory, _without_model(factory)
    return module


@pytest.fixture
def fake_base(monkeypatch):
    """Install the stand-in as ``bmex_wf.workflows.base``; returns a setter for failures."""
    from bmex_wf.workflows import participant

    module = _fake_base_module(_fake_init_bmex_wf())
    monkeypatch.setitem(sys.modules, "bmex_wf.workflows.base", module)
    monkeypatch.setattr(participant, "_add_reports", lambda *args: None)
    monkeypatch.setattr(participant, "_add_volumes", lambda *args: None)
    monkeypatch.setattr(reporting, "subject_reports", lambda cfg, subjects: {})

    def fail_on(pattern):
        module.init_bmex_wf = _fake_init_bmex_wf(pattern)
        module.init_bmex_model_wf = _without_model(module.init_bmex_wf)

    return fail_on


@pytest.fixture
def small_bids(tmp_path):
    """sub-01 (T1w, 2 runs), sub-02 (T1w + T2w), sub-03 (T1w, no age)."""
    root = tmp_path / "bids"
    rng = np.random.default_rng(0)
    images = {"sub-01": ["run-1_T1w", "run-2_T1w"], "sub-02": ["T1w", "T2w"], "sub-03": ["T1w"]}
    for sub, suffixes in images.items():
        (root / sub / "anat").mkdir(parents=True)
        for suffix in suffixes:
            data = rng.integers(0, 100, (6, 7, 8)).astype("int16")
            # 6 mm voxels: a field of view large enough to pass the size check
            nb.Nifti1Image(data, np.diag([6.0, 6.0, 6.0, 1.0])).to_filename(root / sub / "anat" / f"{sub}_{suffix}.nii.gz")
    (root / "dataset_description.json").write_text('{"Name": "small", "BIDSVersion": "1.9.0"}')
    (root / "participants.tsv").write_text("participant_id\tage\nsub-01\t2 years\nsub-02\t30\n")
    (root / "participants.json").write_text('{"age": {"Units": "months"}}')
    return root


@pytest.fixture
def models(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("BMEX-Month24-T1-model.pt", "BMEX-Month24-T2-model.pt"):
        (folder / name).write_bytes(b"stand-in")
    return folder


def _run(small_bids, tmp_path, models, *extra, multiproc=False):
    """Run the app; Linear plugin unless ``multiproc`` (MultiProc's start-up is slow)."""
    out, work = tmp_path / "out", tmp_path / "work"
    argv = [str(small_bids), str(out), "participant", "-w", str(work), "--models-dir", str(models),
            "--nprocs", "2", "--omp-nthreads", "1", "--device", "cpu", *extra]
    if not multiproc and "--use-plugin" not in extra:
        linear = tmp_path / "linear.yml"
        linear.write_text("plugin: Linear\n")
        argv += ["--use-plugin", str(linear)]
    return cli_main(argv), out, work


def _outputs(out: Path, rel: str, contrast: str) -> list[Path]:
    folder = out / Path(rel).parent
    names = derivative_names(Path(rel).name, contrast)
    return [folder / names[k] for k in OUTPUT_KEYS]


def test_participant_run_isolates_failures(small_bids, tmp_path, models, fake_base, caplog):
    fake_base("sub-01_run-2")
    code, out, work = _run(small_bids, tmp_path, models, multiproc=True)
    assert code == 1
    ok = [("sub-01/anat/sub-01_run-1_T1w.nii.gz", "T1w"), ("sub-02/anat/sub-02_T1w.nii.gz", "T1w"),
          ("sub-02/anat/sub-02_T2w.nii.gz", "T2w")]
    for rel, contrast in ok:
        assert all(p.is_file() for p in _outputs(out, rel, contrast)), rel
    assert not any(p.exists() for p in _outputs(out, "sub-01/anat/sub-01_run-2_T1w.nii.gz", "T1w"))
    crashes = list((out / "logs").glob("crash-*.txt"))
    assert crashes and "synthetic failure" in crashes[0].read_text()
    summary = next((out / "logs").glob("summary-*.tsv")).read_text().splitlines()
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in summary[1:]}
    assert rows["sub-01/anat/sub-01_run-2_T1w.nii.gz"][0] == "failed"
    assert summary[0].split("\t") == ["image", "status", "node", "reason", "crash_file",
                                      "missing_outputs"]
    failed = rows["sub-01/anat/sub-01_run-2_T1w.nii.gz"]
    assert failed[1].endswith("sub_01_run_2_T1w_wf.bmex_wf.enhance")
    assert "synthetic failure" in failed[2] and Path(failed[3]).is_file()
    assert "desc-enhanced_T1w.nii.gz" in failed[4]
    assert rows["sub-03/anat/sub-03_T1w.nii.gz"][0] == "failed"
    assert "--age-months" in rows["sub-03/anat/sub-03_T1w.nii.gz"][2]
    assert [rows[rel][0] for rel, _ in ok] == ["ok"] * 3
    assert "FAILED  sub-03/anat/sub-03_T1w.nii.gz" in caplog.text
    side = json.loads(_outputs(out, "sub-02/anat/sub-02_T1w.nii.gz", "T1w")[0].with_suffix("").with_suffix(".json").read_text())
    assert side["AgeMonths"] == 30.0 and "participants.tsv" in side["AgeSource"]
    assert side["AgeGroup"] == "Month24" and side["BMEX"]["contrast"] == "T1w"
    assert json.loads((out / "dataset_description.json").read_text())["DatasetType"] == "derivative"
    assert "stand-in" in (out / "logs/CITATION.md").read_text()
    assert "nipype1" in (out / "logs/CITATION.bib").read_text()
    config = (work / "config.toml").read_text()
    assert "[execution]" in config and "use_gpu = false" in config
    assert list((out / "logs").glob("config-*.toml"))


def test_all_ok_exit_zero_and_filters(small_bids, tmp_path, models, fake_base):
    code, out, _ = _run(small_bids, tmp_path, models, "--participant-label", "02")
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == [".bidsignore", "dataset_description.json",
                                                     "dseg.tsv", "logs", "sub-02"]
    marker = tmp_path / "work" / "stale.txt"
    marker.write_text("left by an earlier run")
    code, out, _ = _run(small_bids, tmp_path, models, "--participant-label", "03", "--age-months", "adult",
                        "--clean-workdir")
    assert code == 0 and (out / "sub-03").is_dir() and not marker.exists()


def test_stop_on_first_crash(small_bids, tmp_path, models, fake_base, caplog):
    code, out, _ = _run(small_bids, tmp_path, models, "--stop-on-first-crash")
    assert code == 1
    assert not (out / "sub-01").exists()  # sub-03's missing age stopped the run before it
    assert "--age-months" in caplog.text
    fake_base("sub-01_run-1")
    code, out, _ = _run(small_bids, tmp_path, models, "--stop-on-first-crash",
                        "--participant-label", "01", "02")
    assert code == 1
    done = [p.name for p in out.rglob("*_desc-enhanced_*.nii.gz") if "_res-" not in p.name]
    assert len(done) < 4  # the crash stopped the run before every image was processed


def test_missing_model_fails_clearly(small_bids, tmp_path, models, fake_base, caplog):
    (models / "BMEX-Month24-T2-model.pt").unlink()
    code, out, _ = _run(small_bids, tmp_path, models, "--participant-label", "02")
    assert code == 1
    assert "BMEX-Month24-T2-model.pt" in caplog.text
    assert all(p.is_file() for p in _outputs(out, "sub-02/anat/sub-02_T1w.nii.gz", "T1w"))


def test_use_plugin_linear_and_boilerplate(small_bids, tmp_path, models, fake_base, caplog):
    plugin = tmp_path / "plugin.yml"
    plugin.write_text("plugin: Linear\nplugin_args: {}\n")
    code, out, work = _run(small_bids, tmp_path, models, "--participant-label", "01",
                           "--use-plugin", str(plugin), "--boilerplate-only")
    assert code == 0 and (out / "logs/CITATION.md").is_file() and not (out / "sub-01").exists()
    code, out, work = _run(small_bids, tmp_path, models, "--participant-label", "01",
                           "--use-plugin", str(plugin))
    assert code == 0 and "Running with plugin Linear" in caplog.text
    assert 'plugin = "Linear"' in (work / "config.toml").read_text()


def test_no_images_is_an_error(small_bids, tmp_path, models, fake_base, caplog):
    code, _, _ = _run(small_bids, tmp_path, models, "--session-label", "none")
    assert code == 1 and "no T1w or T2w image" in caplog.text


def test_enhance_subcommand(small_bids, tmp_path, models, fake_base):
    image = small_bids / "sub-02/anat/sub-02_T2w.nii.gz"
    out = tmp_path / "enh"
    argv = ["enhance", str(image), str(out), "--age-months", "30", "--models-dir", str(models),
            "--device", "cpu", "--nprocs", "1"]
    assert cli_main(argv) == 0
    files = [out / n for n in derivative_names(image.name, "T2w").values()]
    assert all(p.is_file() for p in files)
    meta = json.loads((out / "sub-02_desc-enhanced_T2w.json").read_text())
    assert meta["Sources"] == [image.as_uri(), "bids::sub-02_space-T2w_desc-brain_mask.nii.gz"]
    assert meta["AgeSource"] == "--age-months 30"
    assert (out / "work/config.toml").is_file() and (out / "logs/CITATION.md").is_file()
    assert cli_main(argv[:4] + ["1", *argv[5:]]) == 1  # Month0: no such model file
    fake_base("sub-02_T2w")
    assert cli_main(argv) == 1


def test_group_failures_from_summaries(tmp_path):
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "summary-a.tsv").write_text("image\tstatus\treason\n"
                                        "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz\tfailed\tboom\n"
                                        "sub-02/anat/sub-02_T2w.nii.gz\tfailed\tno age\n")
    (logs / "summary-b.tsv").write_text("image\tstatus\treason\n"
                                        "sub-02/anat/sub-02_T2w.nii.gz\tok\t\n")
    import os

    os.utime(logs / "summary-a.tsv", (1, 1))
    failures = cli_group.failures_from_summaries(logs)
    assert failures == [{"subject": "01", "session": "1", "contrast": "T1w",
                         "source": "sub-01_ses-1_T1w", "error": "boom", "status": "failed"}]


def test_build_config_plugin_defaults(small_bids, tmp_path, models):
    from bmex_wf.cli.parser import parse_args

    opts = parse_args([str(small_bids), str(tmp_path / "o"), "participant", "--nprocs", "3",
                       "--mem-gb", "5", "--device", "cpu"])
    cfg = parser.build_config(opts)
    assert (cfg.plugin, cfg.plugin_args["n_procs"], cfg.plugin_args["memory_gb"]) == ("MultiProc", 3, 5.0)
    assert cfg.plugin_args["mp_context"] == "forkserver"
    assert cfg.use_gpu is False and cfg.omp_nthreads == 3 and cfg.work_dir == Path.cwd() / "work"
    plugin = tmp_path / "p.yml"
    plugin.write_text("plugin: MultiProc\nplugin_args: {n_procs: 1}\n")
    opts = parse_args([str(small_bids), str(tmp_path / "o"), "participant", "--use-plugin", str(plugin),
                       "--nprocs", "4", "--device", "cuda"])
    cfg = parser.build_config(opts)
    assert cfg.plugin_args["n_procs"] == 1 and cfg.use_gpu is True


# --------------------------------------------------------------------------- real workflow
def _real_base():
    try:
        import bmex_wf.workflows.base  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"init_bmex_wf is not available: {exc}")


def _cropped_copy(bids_dir: Path, dest: Path, subjects, size: int = 48) -> Path:
    """The shared dataset's tables and sidecars for ``subjects``, images cropped to ``size``³
    voxels around the brain's centre (real data and every table quirk, at a CI-sized cost)."""
    import shutil

    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(bids_dir / "dataset_description.json", dest / "dataset_description.json")
    for sub in subjects:
        for path in (bids_dir / sub).rglob("*"):
            target = dest / path.relative_to(bids_dir)
            if path.is_dir():
                target.mkdir(parents=True, exist_ok=True)
            elif path.name.endswith(".nii.gz"):
                img = nb.load(path)
                coords = np.argwhere(np.asarray(img.dataobj) > 0)
                start = [max(0, int(c) - size // 2) for c in coords.mean(axis=0)]
                img.slicer[tuple(slice(s, s + size) for s in start)].to_filename(target)
            else:
                shutil.copy(path, target)
    return dest


@pytest.mark.slow
def test_end_to_end_shared(bids_dir, tmp_path, small_models):
    _real_base()
    bids_dir = _cropped_copy(bids_dir, tmp_path / "bids", ["sub-0002", "sub-0003", "sub-0009"])
    out, work = tmp_path / "out", tmp_path / "work"
    argv = [str(bids_dir), str(out), "participant", "-w", str(work), "--models-dir", str(small_models),
            "--participant-label", "0002", "0009", "--nprocs", "2", "--omp-nthreads", "2",
            "--device", "cpu", "--brain-mask-source", "nonzero", "--skip-bids-validation"]
    assert cli_main(argv) == 0
    expected = {("sub-0002", "T1w", "Month24"), ("sub-0009", "T2w", "Fetal")}
    for sub, contrast, group in expected:
        rel = f"{sub}/ses-V01/anat/{sub}_ses-V01_{contrast}.nii.gz"
        files = _outputs(out, rel, contrast)
        assert all(p.is_file() for p in files), rel
        src = nb.load(bids_dir / rel)
        enhanced = nb.load(files[0])
        assert enhanced.shape == src.shape and np.allclose(enhanced.affine, src.affine, atol=1e-4)
        meta = json.loads(files[0].with_suffix("").with_suffix(".json").read_text())
        assert meta["AgeGroup"] == group and meta["Sources"][0] == f"bids:raw:{rel}"
        assert "QI" in meta and meta["SkullStripped"] is False
    assert sorted(p.name for p in out.glob("sub-*") if p.is_dir()) == ["sub-0002", "sub-0009"]
    assert (out / "sub-0002.html").is_file() and (out / "sub-0009.html").is_file()
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["GeneratedBy"][0]["Name"] == "bmex-wf"
    assert (out / "logs/CITATION.md").read_text().strip()
    # A second run is served from the work-directory cache (only the sinks run again).
    results = {p: p.stat().st_mtime_ns for p in work.rglob("result_*.pklz")
               if "_wf/bmex_wf/" in p.as_posix()}
    assert results
    assert cli_main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in results} == results
    assert all(p.is_file() for sub, c, _ in expected
               for p in _outputs(out, f"{sub}/ses-V01/anat/{sub}_ses-V01_{c}.nii.gz", c))


def _crash(in_file):
    raise RuntimeError("injected tissue-volume failure")


def test_crash_in_optional_step_fails_the_image(small_bids, tmp_path, models, fake_base, caplog,
                                                monkeypatch):
    """A crashed step after the main outputs were written still fails the image, by name."""
    from nipype.interfaces import utility as niu
    from nipype.pipeline import engine as pe

    from bmex_wf.workflows import participant

    def add_failing_volumes(workflow, bmex_wf, job, output_dir, bids_dir):
        node = pe.Node(niu.Function(function=_crash, input_names=["in_file"],
                                    output_names=["out"]), name="tissue_volumes")
        workflow.connect([(bmex_wf, node, [("outputnode.dseg", "in_file")])])

    monkeypatch.setattr(participant, "_add_volumes", add_failing_volumes)
    code, out, _ = _run(small_bids, tmp_path, models, "--participant-label", "02")
    assert code == 1
    assert all(p.is_file() for p in _outputs(out, "sub-02/anat/sub-02_T1w.nii.gz", "T1w"))
    summary = next((out / "logs").glob("summary-*.tsv")).read_text().splitlines()
    rows = {line.split("\t")[0]: line.split("\t")[1:] for line in summary[1:]}
    status, node, reason, crash_file, _missing = rows["sub-02/anat/sub-02_T1w.nii.gz"]
    assert status == "failed" and node.endswith("sub_02_T1w_wf.tissue_volumes")
    assert "injected tissue-volume failure" in reason and Path(crash_file).is_file()
    assert "FAILED  sub-02/anat/sub-02_T1w.nii.gz: node" in caplog.text
    assert "0 of 2 images processed successfully" in caplog.text


def test_incomplete_node_fails_the_image(small_bids, tmp_path, models, fake_base, monkeypatch):
    """No crash file, but a node of the image never finished: the image is not OK."""
    from bmex_wf.execution import outcomes

    code, out, _ = _run(small_bids, tmp_path, models, "--participant-label", "02")
    assert code == 0
    monkeypatch.setattr(outcomes, "unfinished_nodes", lambda wf, root: ["bmex_wf.enhance"])
    code, out, _ = _run(small_bids, tmp_path, models, "--participant-label", "02")
    assert code == 1
    summary = max((out / "logs").glob("summary-*.tsv"), key=lambda p: p.stat().st_mtime)
    assert "did not finish, first bmex_wf.enhance" in summary.read_text()


@pytest.mark.parametrize("case", ["ants", "graphviz", "unwritable", "cuda"])
def test_missing_prerequisite_exits_2(small_bids, tmp_path, models, fake_base, caplog, monkeypatch,
                                      case):
    import importlib.util
    import shutil

    import torch

    extra = []
    if case == "ants":
        find_spec = importlib.util.find_spec
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "ants" else find_spec(name, *a))
        expected = "pip install antspyx"
    elif case == "graphviz":
        monkeypatch.setattr(shutil, "which", lambda name: None)
        extra, expected = ["--write-graph"], "Graphviz"
    elif case == "unwritable":
        (tmp_path / "out").write_text("a file where the output folder should be")
        expected = "OUTPUT_DIR"
    else:
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
        extra, expected = ["--device", "cuda"], "no CUDA device"
    argv = [str(small_bids), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
            "--models-dir", str(models), "--nprocs", "1", *extra]
    if case != "cuda":
        argv += ["--device", "cpu"]
    assert cli_main(argv) == 2
    assert expected in caplog.text
    assert not list(tmp_path.rglob("*_desc-enhanced_*.nii.gz"))


def test_locked_work_dir_stops_a_second_run(small_bids, tmp_path, models, fake_base, caplog):
    """A work directory held by a live run stops another run, naming the holder (exit 2)."""
    import socket
    import subprocess

    from bmex_wf.execution.workdir_lock import acquire_work_dir_lock

    work = tmp_path / "work"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = acquire_work_dir_lock(work)
        record = json.loads(lock.path.read_text())
        record["pid"] = holder.pid  # the live holder is another process of this host
        record.pop("proc_start", None)
        lock.path.write_text(json.dumps(record))
        code, out, _ = _run(small_bids, tmp_path, models, "--participant-label", "02")
        assert code == 2
        assert f"pid {holder.pid}" in caplog.text and socket.gethostname() in caplog.text
        assert not (out / "sub-02").exists()
    finally:
        holder.kill()
        holder.wait()
    code, out, _ = _run(small_bids, tmp_path, models, "--participant-label", "02")
    assert code == 0  # the dead holder's lock is stale: taken over
    assert "stale" in caplog.text.lower() or "taken over" in caplog.text.lower()


def test_enhance_honours_use_plugin(small_bids, tmp_path, models, fake_base, caplog):
    """``bmex-wf enhance`` resolves its settings like the participant level (plugin file)."""
    linear = tmp_path / "linear.yml"
    linear.write_text("plugin: Linear\n")
    image = small_bids / "sub-02/anat/sub-02_T1w.nii.gz"
    out = tmp_path / "enh"
    assert cli_main(["enhance", str(image), str(out), "--age-months", "30", "--models-dir",
                     str(models), "--device", "cpu", "--use-plugin", str(linear)]) == 0
    assert "Running with plugin Linear" in caplog.text
    config = (out / "work/config.toml").read_text()
    assert 'plugin = "Linear"' in config and "maxtasksperchild" not in config
