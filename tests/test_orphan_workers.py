"""No process of a run is left computing after ``kill -9`` of its main process (Linux)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bmex_wf.execution import orphans
from bmex_wf.execution.processes import pid_running

REPO = Path(__file__).resolve().parents[1]
linux_only = pytest.mark.skipif(not orphans.LINUX, reason="the worker guard is Linux-only")

#: A run: one MultiProc (forkserver) Function node that starts a guarded child, then sleeps.
DRIVER = '''
import sys


def sleeper(pids_file):
    import json, os, subprocess, sys, time
    from bmex_wf.execution.orphans import die_with_parent_code

    child = subprocess.Popen([sys.executable, "-c", die_with_parent_code() +
                              "import time; time.sleep(60)"])
    plain = subprocess.Popen(["sleep", "60"])  # a child that does nothing to die with us
    time.sleep(0.5)  # the guarded child has set its parent-death signal
    with open(pids_file + ".tmp", "w") as out:
        json.dump({"worker": os.getpid(), "parent": os.getppid(), "child": child.pid,
                   "plain": plain.pid}, out)
    os.rename(pids_file + ".tmp", pids_file)
    time.sleep(60)
    return 0


if __name__ == "__main__":
    from nipype.interfaces.utility import Function
    from nipype.pipeline import engine as pe

    from bmex_wf.execution.plugins import run_with_plugin

    work, pids_file = sys.argv[1:3]
    node = pe.Node(Function(function=sleeper, input_names=["pids_file"], output_names=["out"]),
                   name="sleeper")
    node.inputs.pids_file = pids_file
    wf = pe.Workflow(name="orphans", base_dir=work)
    wf.add_nodes([node])
    run_with_plugin(wf, "MultiProc", {"n_procs": 1, "raise_insufficient": False,
                                      "maxtasksperchild": 1, "mp_context": "forkserver"})
'''


def _wait_gone(pids, timeout_s: float) -> list[int]:
    """Pids still running after ``timeout_s`` seconds."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        alive = [pid for pid in pids if pid_running(pid)]
        if not alive:
            return []
        time.sleep(0.1)
    return [pid for pid in pids if pid_running(pid)]


def _wait_for_text(path: Path, proc: subprocess.Popen, timeout_s: float) -> str:
    """The text written to ``path`` by ``proc`` (or a descendant); fails if it never comes."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end and proc.poll() is None:
        text = path.read_text() if path.exists() else ""
        if text.strip():
            return text
        time.sleep(0.05)
    log = path.with_name("log.txt")
    output = log.read_text()[-2000:] if log.exists() else ""
    pytest.fail(f"{path.name} was not written (exit code {proc.poll()}) {output}")


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(
        filter(None, [str(REPO), os.environ.get("PYTHONPATH")])), "NIPYPE_NO_ET": "1"}


@linux_only
def test_multiproc_worker_and_its_child_die_with_killed_run(tmp_path):
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    pids_file = tmp_path / "pids.json"
    log = (tmp_path / "log.txt").open("w")
    main = subprocess.Popen([sys.executable, str(driver), str(tmp_path / "work"), str(pids_file)],
                            cwd=tmp_path, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    try:
        pids = json.loads(_wait_for_text(pids_file, main, 60))
        assert pids["parent"] != main.pid  # a forkserver worker: its parent is not the run
        procs = [pids["worker"], pids["child"], pids["plain"]]
        assert all(pid_running(pid) for pid in procs)
    finally:
        main.send_signal(signal.SIGKILL)
        main.wait()
        log.close()
    started = time.monotonic()
    left = _wait_gone(procs, 30)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"still running {time.monotonic() - started:.0f} s after kill -9: {left}"


#: A worker whose parent stays alive: only its watchdog can see the run's main process go.
WATCHED = '''
import json, subprocess, sys
sys.path.insert(0, sys.argv[3])
from bmex_wf.execution.orphans import install_worker_guard
from bmex_wf.execution.processes import process_start_time

main_pid = int(sys.argv[1])
assert install_worker_guard(main_pid, process_start_time(main_pid), interval=0.2)
child = subprocess.Popen(["sleep", "60"])  # a plain child, not guarded itself
with open(sys.argv[2], "w") as out:
    json.dump({"worker": __import__("os").getpid(), "child": child.pid}, out)
child.wait()
'''


@linux_only
def test_watchdog_kills_worker_and_children_when_main_pid_ends(tmp_path):
    fake_main = subprocess.Popen(["sleep", "60"])
    pids_file = tmp_path / "pids.json"
    worker = subprocess.Popen([sys.executable, "-c", WATCHED, str(fake_main.pid), str(pids_file),
                               str(REPO)])
    try:
        pids = json.loads(_wait_for_text(pids_file, worker, 30))
        time.sleep(0.5)
        assert worker.poll() is None, "the worker must live while the main process does"
    finally:
        fake_main.kill()
        fake_main.wait()
    try:
        assert worker.wait(timeout=10) == orphans.ORPHAN_EXIT_CODE
        assert not _wait_gone([pids["child"]], 5)
    finally:
        worker.kill()
        if pid_running(pids.get("child", 0)):
            os.kill(pids["child"], signal.SIGKILL)


#: A worker whose run's main process (pytest) lives on: only the kernel sees its parent go.
ORPHANED = '''
import os, subprocess, sys, time
sys.path.insert(0, sys.argv[2])
from bmex_wf.execution.orphans import install_worker_guard, main_process

worker = os.fork()
if worker == 0:
    install_worker_guard(*main_process())  # its own main: never gone during the test
    open(sys.argv[1], "w").write(str(os.getpid()))
    time.sleep(60)
    os._exit(0)
time.sleep(60)
'''


@linux_only
def test_worker_dies_with_its_parent(tmp_path):
    pid_file = tmp_path / "worker.pid"
    parent = subprocess.Popen([sys.executable, "-c", ORPHANED, str(pid_file), str(REPO)])
    try:
        worker = int(_wait_for_text(pid_file, parent, 30))
        assert pid_running(worker)
    finally:
        parent.kill()
        parent.wait()
    left = _wait_gone([worker], 5)
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left


@linux_only
def test_registration_child_dies_with_its_parent(tmp_path):
    # the real _run_registration, with a stand-in for the antsRegistration child
    code = ('import sys; sys.path.insert(0, sys.argv[2])\n'
            'from bmex_wf.spaces import registration\n'
            'registration._REGISTRATION_CHILD = ("import json, os, sys, time; "\n'
            '    "open(json.loads(sys.argv[1])[0], \'w\').write(str(os.getpid())); "\n'
            '    "time.sleep(60)")\n'
            'registration._run_registration([sys.argv[1]], 1, what="test")\n')
    pid_file = tmp_path / "child.pid"
    parent = subprocess.Popen([sys.executable, "-c", code, str(pid_file), str(REPO)])
    try:
        child = int(_wait_for_text(pid_file, parent, 60))
        assert pid_running(child)
    finally:
        parent.kill()
        parent.wait()
    assert not _wait_gone([child], 5)


def test_run_with_plugin_guards_local_pools_only(tmp_path, monkeypatch):
    from nipype.pipeline import engine as pe

    from bmex_wf.execution import plugins
    from bmex_wf.execution.multiproc import GuardedLegacyMultiProcPlugin, GuardedMultiProcPlugin

    seen = []
    monkeypatch.setattr(pe.Workflow, "run", lambda self, plugin, plugin_args:
                        seen.append((plugin, plugin_args)))
    wf = pe.Workflow(name="top", base_dir=str(tmp_path))
    args = {"n_procs": 2, "memory_gb": 3.5, "raise_insufficient": False, "maxtasksperchild": 1,
            "mp_context": "forkserver"}
    plugins.run_with_plugin(wf, "MultiProc", dict(args))
    plugins.run_with_plugin(wf, "LegacyMultiProc", {"n_procs": 1, "maxtasksperchild": 3})
    plugins.run_with_plugin(wf, "Linear", {})
    (multi, multi_args), (legacy, _), (linear, _) = seen
    assert isinstance(multi, GuardedMultiProcPlugin) and multi_args == args
    assert (multi.processors, multi.memory_gb, multi.raise_insufficient) == (2, 3.5, False)
    assert multi.plugin_args == args
    assert multi.pool._mp_context.get_start_method() == "forkserver"
    assert isinstance(legacy, GuardedLegacyMultiProcPlugin)
    assert legacy.pool._maxtasksperchild == 3 and legacy.processors == 1
    if orphans.LINUX:
        assert multi.pool._initializer is orphans.worker_initializer
        assert multi.pool._initargs[2:] == orphans.main_process()
        assert legacy.pool._initializer is orphans.worker_initializer
    legacy.pool.terminate()
    legacy.pool.join()
    multi.pool.shutdown()
    assert linear == "Linear"
