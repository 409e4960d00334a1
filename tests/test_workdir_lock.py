"""Work-directory lock: one run per work directory, stale locks taken over."""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bmex_wf.execution.processes import process_start_time
from bmex_wf.execution.workdir_lock import LOCK_NAME, WorkDirLocked, acquire_work_dir_lock, work_dir_lock

REPO = Path(__file__).resolve().parents[1]
LOGGER = "bmex_wf.execution.workdir_lock"


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _write_lock(work_dir: Path, **record) -> Path:
    path = work_dir / LOCK_NAME
    path.write_text(json.dumps({"host": socket.gethostname(), "started": "2024-01-01T00:00:00",
                                **record}))
    return path


def test_lock_file_records_holder_and_is_released(tmp_path):
    with work_dir_lock(tmp_path / "work") as lock:
        path = tmp_path / "work" / LOCK_NAME
        record = json.loads(path.read_text())
        assert record["host"] == socket.gethostname()
        assert record["pid"] == os.getpid()
        assert record["started"][:4].isdigit()
        assert lock.path == path
    assert not path.exists()


def test_second_acquire_of_live_lock_raises_naming_holder(tmp_path):
    lock = acquire_work_dir_lock(tmp_path)
    try:
        with pytest.raises(WorkDirLocked) as info:
            acquire_work_dir_lock(tmp_path, force_unlock=True)  # a live local holder stays
        message = str(info.value)
        assert "\n" not in message
        assert str(tmp_path / LOCK_NAME) in message
        assert f"host {socket.gethostname()} pid {os.getpid()}" in message
        assert lock.record["started"] in message
        assert info.value.holder["token"] == lock.record["token"]
        assert (tmp_path / LOCK_NAME).exists()
    finally:
        assert lock.release()
    assert not (tmp_path / LOCK_NAME).exists()


def test_lock_held_by_another_live_process(tmp_path):
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); "
            "from bmex_wf.execution.workdir_lock import acquire_work_dir_lock; "
            "acquire_work_dir_lock(sys.argv[1]); print('locked', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(REPO)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(WorkDirLocked, match=f"pid {holder.pid} "):
            acquire_work_dir_lock(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    # killed with SIGKILL: its lock is left behind, and taken over as stale
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == holder.pid
    with work_dir_lock(tmp_path) as lock:
        assert lock.record["pid"] == os.getpid()


def test_stale_lock_of_dead_pid_is_taken_over(tmp_path, caplog):
    pid = _dead_pid()
    _write_lock(tmp_path, pid=pid)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        lock = acquire_work_dir_lock(tmp_path)
    try:
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "stale" in warnings[0] and f"pid {pid} is no longer running" in warnings[0]
    finally:
        lock.release()


def test_live_pid_of_another_process_is_stale(tmp_path, caplog):
    start = process_start_time(os.getpid())
    if start is None:
        pytest.skip("no /proc: process start times are unknown")
    # our own pid, but a start time that is not ours: the pid was reused
    _write_lock(tmp_path, pid=os.getpid(), proc_start=start + 1)
    with caplog.at_level(logging.WARNING, logger=LOGGER), work_dir_lock(tmp_path):
        pass
    assert f"pid {os.getpid()} is now another process" in caplog.text


def test_corrupt_lock_is_taken_over(tmp_path, caplog):
    path = tmp_path / LOCK_NAME
    path.write_text("{not json")
    old = time.time() - 60
    os.utime(path, (old, old))
    with caplog.at_level(logging.WARNING, logger=LOGGER), work_dir_lock(tmp_path) as lock:
        assert json.loads(path.read_text())["token"] == lock.record["token"]
    assert "unreadable; taking it over" in caplog.text


def test_lock_of_another_host_needs_force_unlock(tmp_path, caplog):
    path = _write_lock(tmp_path, host="elsewhere-node", pid=_dead_pid())
    before = path.read_text()
    with pytest.raises(WorkDirLocked) as info:
        acquire_work_dir_lock(tmp_path)
    message = str(info.value)
    assert "host elsewhere-node pid" in message and "--force-unlock" in message
    assert path.read_text() == before  # left untouched
    with (caplog.at_level(logging.WARNING, logger=LOGGER),
          work_dir_lock(tmp_path, force_unlock=True) as lock):
        assert json.loads(path.read_text())["token"] == lock.record["token"]
    assert "Overriding work directory lock" in caplog.text and "elsewhere-node" in caplog.text
    assert not path.exists()


def test_release_removes_only_our_own_lock(tmp_path, caplog):
    lock = acquire_work_dir_lock(tmp_path)
    path = tmp_path / LOCK_NAME
    other = {**lock.record, "token": "someone-else"}
    path.write_text(json.dumps(other))  # taken over meanwhile (e.g. --force-unlock elsewhere)
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert lock.release() is False
    assert json.loads(path.read_text()) == other
    assert "no longer ours" in caplog.text
    assert lock.release() is False  # once only
    path.unlink()
    lock2 = acquire_work_dir_lock(tmp_path)
    assert lock2.release() is True and not path.exists()


def test_lock_is_released_at_interpreter_exit(tmp_path):
    code = ("import sys; sys.path.insert(0, sys.argv[2]); "
            "from bmex_wf.execution.workdir_lock import acquire_work_dir_lock; "
            "lock = acquire_work_dir_lock(sys.argv[1]); assert lock.path.exists()")
    subprocess.run([sys.executable, "-c", code, str(tmp_path), str(REPO)], check=True)
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("guard", [True, False], ids=["flock", "no-flock"])
def test_concurrent_acquires_have_one_winner(tmp_path, guard):
    # without flock (some network file systems) the atomic create alone decides
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); "
            "from bmex_wf.execution import workdir_lock\n"
            f"workdir_lock.fcntl = workdir_lock.fcntl if {guard} else None\n"
            "from bmex_wf.execution.workdir_lock import acquire_work_dir_lock, WorkDirLocked\n"
            "while time.time() < float(sys.argv[3]): time.sleep(0.001)\n"
            "try:\n    lock = acquire_work_dir_lock(sys.argv[1])\n"
            "except WorkDirLocked:\n    print('locked out', flush=True)\n"
            "else:\n    print('won', flush=True); sys.stdin.read()\n")
    start = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), str(REPO), str(start)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    try:
        outcomes = sorted(p.stdout.readline().strip() for p in procs)
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(timeout=30)
    assert outcomes == ["locked out"] * 3 + ["won"]
    assert not (tmp_path / LOCK_NAME).exists()
