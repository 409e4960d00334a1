"""Plugin files, per-node SLURM requests (clamped to the partition) and waiting for jobs.

``sinfo``/``squeue`` are replaced by recorded answers; the real cluster run is in
``tests/test_slurm.py``.
"""

from __future__ import annotations

import subprocess
from importlib import resources
from pathlib import Path

import pytest
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from bmex_wf.execution import plugins
from bmex_wf.execution.plugins import (
    NodeLimits,
    PluginError,
    apply_node_resources,
    job_limits,
    load_plugin_file,
    nipype_plugin_args,
    node_request,
    partition_name,
    query_partition_limits,
    wait_for_jobs,
)


class FakeRunner:
    """``subprocess.run`` stand-in: answers per command name, records every call."""

    def __init__(self, **answers):
        self.answers, self.calls = answers, []

    def __call__(self, cmd, **kwargs):
        self.calls.append(list(cmd))
        answer = self.answers[cmd[0]]
        if callable(answer):
            answer = answer(cmd)
        if isinstance(answer, Exception):
            raise answer
        out, code = answer if isinstance(answer, tuple) else (answer, 0)
        return subprocess.CompletedProcess(cmd, code, stdout=out, stderr="boom" if code else "")


# --------------------------------------------------------------------------- plugin files
def _write(tmp_path, text: str) -> Path:
    path = tmp_path / "plugin.yml"
    path.write_text(text)
    return path


def test_example_plugin_files_load():
    folder = resources.files("bmex_wf.data") / "plugins"
    found = {}
    for name in ("slurmgraph.yml", "slurm.yml", "multiproc.yml"):
        plugin, args = load_plugin_file(Path(str(folder / name)))
        found[plugin] = args
    assert set(found) == {"SLURMGraph", "SLURM", "MultiProc"}
    assert "--partition" in found["SLURMGraph"]["sbatch_args"]
    assert found["MultiProc"]["n_procs"] > 0


@pytest.mark.parametrize(("text", "message"), [
    ("plugin: [\n", "not a readable YAML"),
    ("plugin_args: {}\n", "expected 'plugin:"),
    ("plugin: Magic\n", "unknown Nipype plugin 'Magic'"),
    ("plugin: SLURM\nplugins_args: {}\n", "unknown entries plugins_args"),
    ("plugin: Linear\nplugin_args: [1]\n", "must be a mapping"),
    ("plugin: SLURM\nplugin_args: {sbatch_args: [-p, x]}\n", "sbatch_args must be a string"),
    ("plugin: MultiProc\nplugin_args: {n_procs: 0}\n", "n_procs must be a positive integer"),
    ("plugin: MultiProc\nplugin_args: {n_procs: true}\n", "n_procs must be a positive integer"),
    ("plugin: MultiProc\nplugin_args: {memory_gb: -1}\n", "memory_gb must be a positive"),
    ("plugin: SLURMGraph\nplugin_args: {max_mem_gb: lots}\n", "max_mem_gb must be a positive"),
    ("plugin: MultiProc\nplugin_args: {max_cpus: 2}\n", "applies to SLURM plugins only"),
])
def test_bad_plugin_files(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(PluginError, match=message) as err:
        load_plugin_file(path)
    assert str(err.value).startswith(str(path))


def test_plugin_file_round_trip(tmp_path):
    path = _write(tmp_path, "plugin: SLURM\nplugin_args:\n  sbatch_args: -p short -A lab\n"
                  "  max_cpus: 4\n  max_mem_gb: 16\n")
    plugin, args = load_plugin_file(path)
    assert plugin == "SLURM" and args["max_cpus"] == 4 and args["max_mem_gb"] == 16
    assert partition_name(args["sbatch_args"]) == "short"
    # Own keys never reach Nipype; only SLURMGraph gets --kill-on-invalid-dep.
    assert nipype_plugin_args(plugin, args) == {"sbatch_args": "-p short -A lab"}
    graph = nipype_plugin_args("SLURMGraph", {"sbatch_args": "-p x", "min_mem_gb": 2})
    assert graph == {"sbatch_args": "-p x --kill-on-invalid-dep=yes"}
    assert nipype_plugin_args("SLURMGraph", graph) == graph


@pytest.mark.parametrize(("args", "expected"), [
    ("", None), ("--time=1:00:00", None), ("-p gpu", "gpu"), ("--partition=long -c 2", "long"),
    ("--partition long", "long"), ("-pshort", "short"), ("-p a --partition=b", "b"),
])
def test_partition_name(args, expected):
    assert partition_name(args) == expected


# --------------------------------------------------------------------------- limits
def test_partition_limits_from_sinfo():
    runner = FakeRunner(sinfo="2 24105\n16 64000+\n8 128000\n")
    limits = query_partition_limits("main", runner)
    assert (limits.cpus, limits.mem_gb) == (16, 128000 / 1024)
    assert runner.calls == [["sinfo", "-h", "-o", "%c %m", "-p", "main"]]
    assert query_partition_limits(None, runner).cpus == 16
    assert runner.calls[-1] == ["sinfo", "-h", "-o", "%c %m"]


@pytest.mark.parametrize("answer", [("", 0), ("", 1), ("n/a n/a\n", 0),
                                    FileNotFoundError("sinfo")])
def test_partition_limits_errors(answer):
    with pytest.raises(PluginError, match="sinfo: "):
        query_partition_limits("main", FakeRunner(sinfo=answer))


def test_job_limits_sources(caplog):
    never = FakeRunner(sinfo=AssertionError("sinfo must not run"))
    assert job_limits({"max_cpus": 3, "max_mem_gb": 6}, never) == NodeLimits(3, 6.0)
    partial = job_limits({"max_cpus": 1, "sbatch_args": "-p x"}, FakeRunner(sinfo="8 16384\n"))
    assert (partial.cpus, partial.mem_gb) == (1, 16.0) and "partition x" in partial.source
    assert job_limits({}, FakeRunner(sinfo=("", 1))) is None
    assert "not clamped" in caplog.text


@pytest.mark.parametrize(("hints", "limits", "expected"), [
    ((4.0, 2), None, (2, 4096)),
    ((0.2, 1), None, (1, 1024)),               # floor: min_mem_gb
    ((40.0, 8), NodeLimits(2, 23.5), (2, 24064)),  # clamped to the node
    ((0.5, 0), NodeLimits(2, 23.5), (1, 1024)),
])
def test_node_request(hints, limits, expected):
    assert node_request(*hints, limits) == expected


def test_node_request_min_mem():
    assert node_request(0.2, 1, min_mem_gb=0.25) == (1, 256)


# --------------------------------------------------------------------------- workflow nodes
def _workflow():
    wf = pe.Workflow(name="top")
    inner = pe.Workflow(name="inner")
    big = pe.Node(niu.IdentityInterface(fields=["use_gpu"]), name="big", mem_gb=64, n_procs=16)
    big.inputs.use_gpu = True
    small = pe.Node(niu.IdentityInterface(fields=["x"]), name="small")
    small.plugin_args = {"sbatch_args": "--qos=low --mem=1G"}
    inner.add_nodes([big])
    wf.add_nodes([inner, small])
    return wf, big, small


def test_apply_node_resources_clamps_and_gpu():
    wf, big, small = _workflow()
    runner = FakeRunner(sinfo="2 24105\n")
    requests = apply_node_resources(wf, "SLURMGraph", {"sbatch_args": "-p debug"}, gpu=True,
                                    runner=runner)
    assert runner.calls == [["sinfo", "-h", "-o", "%c %m", "-p", "debug"]]
    assert requests == {"inner.big": "--cpus-per-task=2 --mem=24105M --gres=gpu:1",
                        "top.small": "--cpus-per-task=1 --mem=1024M"}
    # Leading space: Nipype concatenates the plugin's and the node's sbatch_args.
    assert big.plugin_args == {"sbatch_args": " --cpus-per-task=2 --mem=24105M --gres=gpu:1",
                               "overwrite": False}
    assert small.plugin_args["sbatch_args"] == " --qos=low --cpus-per-task=1 --mem=1024M"
    # Applying twice (or after request_gpu) does not repeat the options.
    apply_node_resources(wf, "SLURMGraph", {"max_cpus": 2, "max_mem_gb": 8}, gpu=False)
    assert big.plugin_args["sbatch_args"] == " --cpus-per-task=2 --mem=8192M"


def test_gpu_only_with_device_cuda_and_never_probed(monkeypatch):
    import torch

    def probe(*args, **kwargs):
        raise AssertionError("probed for a GPU")

    monkeypatch.setattr(torch.cuda, "is_available", probe)
    monkeypatch.setattr(torch.cuda, "device_count", probe)
    wf, _, _ = _workflow()
    runner = FakeRunner(sinfo="4 8192\n")
    requests = apply_node_resources(wf, "SLURM", {}, gpu=False, runner=runner)
    assert all("gres" not in value for value in requests.values())
    assert [call[0] for call in runner.calls] == ["sinfo"]


def test_other_plugins_untouched():
    wf, big, small = _workflow()
    never = FakeRunner(sinfo=AssertionError("sinfo must not run"))
    assert apply_node_resources(wf, "MultiProc", {"n_procs": 2}, gpu=True, runner=never) == {}
    assert big.plugin_args == {} and small.plugin_args == {"sbatch_args": "--qos=low --mem=1G"}


def test_bids_app_build_adds_requests(tmp_path, monkeypatch):
    """The app's workflow gets the per-node requests of the plugin file."""
    from bmex_wf.cli import workflow as cli_workflow
    from bmex_wf.cli.config import RunConfig

    seen = {}

    def fake_apply(workflow, plugin, plugin_args, *, gpu=False):
        seen.update(plugin=plugin, gpu=gpu)

    monkeypatch.setattr(plugins, "apply_node_resources", fake_apply)
    cfg = RunConfig(bids_dir=tmp_path, output_dir=tmp_path / "out", work_dir=tmp_path,
                    device="cpu", plugin="SLURM")
    cli_workflow.build_workflow(cfg, [], {})
    assert seen == {"plugin": "SLURM", "gpu": False}


# --------------------------------------------------------------------------- waiting for jobs
def _squeue_script(batch: Path, states: list[list[str]]):
    """squeue answers, one poll after another: 'id:name:STATE' lines for jobs of ``batch``."""
    polls = iter(states)

    def answer(cmd):
        rows = next(polls)
        lines = [f"{i}|{n}|{s}|{batch / f'batchscript_{n}.sh'}"
                 for i, n, s in (row.split(":") for row in rows)]
        return "\n".join(lines + ["999|other|RUNNING|/elsewhere/batch/x.sh"]) + "\n"
    return answer


def test_wait_for_jobs(tmp_path):
    batch = tmp_path / "batch"
    runner = FakeRunner(squeue=_squeue_script(batch, [
        ["1:a:RUNNING", "2:b:PENDING", "7:old:COMPLETED"],
        ["1:a:COMPLETED", "2:b:RUNNING"],
        ["1:a:COMPLETED"],
    ]))
    jobs = wait_for_jobs(batch, known={"7"}, poll_s=0, runner=runner)
    assert jobs == {"1": ("a", "COMPLETED"), "2": ("b", "ENDED")}
    assert len(runner.calls) == 3


def test_wait_for_jobs_timeout(tmp_path):
    batch = tmp_path / "batch"
    runner = FakeRunner(squeue=_squeue_script(batch, [["3:c:PENDING"]] * 100))
    with pytest.raises(TimeoutError, match="1 SLURM jobs still active after 0 s: 3"):
        wait_for_jobs(batch, poll_s=0.01, timeout_s=0.05, runner=runner)


def test_run_with_plugin_slurmgraph_reports_failures(tmp_path, monkeypatch):
    wf = pe.Workflow(name="top", base_dir=str(tmp_path))
    wf.add_nodes([pe.Node(niu.IdentityInterface(fields=["x"]), name="n")])
    ran = {}
    monkeypatch.setattr(pe.Workflow, "run",
                        lambda self, plugin, plugin_args: ran.update(plugin=plugin, **plugin_args))
    batch = tmp_path / "top" / "batch"
    runner = FakeRunner(squeue=_squeue_script(batch, [
        ["5:old:COMPLETED"], ["5:old:COMPLETED", "6:j0_n:FAILED", "8:j1_m:CANCELLED",
                              "9:j2_k:COMPLETED"]]))
    with pytest.raises(RuntimeError, match="2 SLURM jobs did not complete: 6 j0_n "
                       r"\(FAILED\), 8 j1_m \(CANCELLED\)"):
        plugins.run_with_plugin(wf, "SLURMGraph", {"max_cpus": 1}, poll_s=0, runner=runner)
    assert ran == {"plugin": "SLURMGraph", "sbatch_args": "--kill-on-invalid-dep=yes"}


def test_run_with_plugin_other_plugins_do_not_wait(tmp_path, monkeypatch):
    wf = pe.Workflow(name="top", base_dir=str(tmp_path))
    monkeypatch.setattr(pe.Workflow, "run", lambda self, plugin, plugin_args: None)
    never = FakeRunner(squeue=AssertionError("squeue must not run"))
    assert plugins.run_with_plugin(wf, "MultiProc", {"n_procs": 1}, runner=never) == {}
