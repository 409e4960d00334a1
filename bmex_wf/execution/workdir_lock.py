"""A lock that keeps two runs from sharing one work directory.

The lock is ``<work_dir>/.bmex-wf.lock``, a JSON record of its holder (``host``, ``pid``,
``started``), created atomically: of two runs starting together, one gets it and the other
raises :class:`WorkDirLocked`. A lock left by a run that is gone (killed with ``kill -9``, a
crash, a reboot) is taken over with a warning; a lock of another host is taken over only with
``force_unlock`` (``--force-unlock``), since its holder cannot be checked from here::

    with work_dir_lock(cfg.work_dir, force_unlock=cfg.force_unlock):
        run_workflow(...)
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import socket
import time
import uuid
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from .processes import pid_running, process_start_time

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None

LOGGER = logging.getLogger(__name__)

#: Name of the lock file inside the work directory.
LOCK_NAME = ".bmex-wf.lock"
#: Name of the file whose flock serialises lock takeovers (kept; removing it is harmless).
GUARD_NAME = ".bmex-wf.lock.guard"
_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class WorkDirLocked(RuntimeError):
    """The work directory is locked by another run; the message names the lock and holder."""

    def __init__(self, path, holder: dict, hint: str):
        self.path = Path(path)
        self.holder = holder
        super().__init__(f"work directory lock {self.path} is held by {describe(holder)}; {hint}")


def describe(holder: dict) -> str:
    """``host H pid P (started S)`` of a lock record."""
    return (f"host {holder.get('host', '?')} pid {holder.get('pid', '?')} "
            f"(started {holder.get('started', '?')})")


def _boot_id() -> str | None:
    try:
        return _BOOT_ID.read_text().strip() or None
    except OSError:
        return None


def _our_record() -> dict:
    pid = os.getpid()
    return {"host": socket.gethostname(), "pid": pid,
            "started": datetime.now().astimezone().isoformat(timespec="seconds"),
            "proc_start": process_start_time(pid), "boot_id": _boot_id(),
            "token": uuid.uuid4().hex}


def _read(path: Path) -> dict | None:
    """The lock record at ``path``; None when unreadable or not a lock record."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (not isinstance(record, dict) or not isinstance(record.get("host"), str)
            or not isinstance(record.get("pid"), int) or isinstance(record["pid"], bool)):
        return None
    return record


def _create(path: Path, record: dict) -> bool:
    """Create ``path`` holding ``record`` unless it exists (atomic); False if it exists."""
    data = json.dumps(record, indent=1) + "\n"
    tmp = path.with_name(f"{path.name}.{record['pid']}.{record['token']}.tmp")
    tmp.write_text(data)
    try:
        os.link(tmp, path)  # complete when it appears; fails if the lock exists
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links here: exclusive create, then write
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as out:
            out.write(data)
        return True
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def _guard(work_dir: Path):
    """Serialise lock inspection and takeover between processes (flock; best effort)."""
    if fcntl is None:
        yield
        return
    try:
        fd = os.open(work_dir / GUARD_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as exc:  # e.g. a file system without flock
            LOGGER.debug("No flock on %s (%s); lock takeovers are not serialised", work_dir, exc)
        yield
    finally:
        os.close(fd)


def _read_settled(path: Path) -> dict | None:
    """:func:`_read`, retried for a moment for a file just created and not yet written."""
    for _ in range(20):
        record = _read(path)
        try:
            young = time.time() - path.stat().st_mtime < 2.0
        except OSError:
            return record
        if record is not None or not young:
            return record
        time.sleep(0.1)
    return _read(path)


def _stale_reason(holder: dict, ours: dict) -> str | None:
    """Why the lock of ``holder`` (on this host) is stale; None while its process runs."""
    pid = holder["pid"]
    if holder.get("boot_id") and ours["boot_id"] and holder["boot_id"] != ours["boot_id"]:
        return "the host has rebooted since"
    if not pid_running(pid):
        return f"pid {pid} is no longer running"
    start = holder.get("proc_start")
    if isinstance(start, int) and process_start_time(pid) not in (None, start):
        return f"pid {pid} is now another process"
    return None


class WorkDirLock:
    """A held work-directory lock; :meth:`release` (or leaving a ``with`` block) frees it."""

    def __init__(self, path: Path, record: dict):
        self.path = path
        self.record = record
        self.released = False
        atexit.register(self.release)

    def release(self) -> bool:
        """Remove the lock file if it is still ours; True when removed."""
        if self.released or os.getpid() != self.record["pid"]:
            return False  # already done, or a forked child of the holder
        self.released = True
        atexit.unregister(self.release)
        with _guard(self.path.parent):
            current = _read(self.path)
            if current is None or current.get("token") != self.record["token"]:
                LOGGER.warning("Work directory lock %s is no longer ours; left in place", self.path)
                return False
            self.path.unlink(missing_ok=True)
        return True

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"WorkDirLock({str(self.path)!r}, {describe(self.record)})"


def acquire_work_dir_lock(work_dir, *, force_unlock: bool = False) -> WorkDirLock:
    """Lock ``work_dir`` (created if missing) for this process.

    Raises
    ------
    WorkDirLocked
        A running process of this host holds the lock, or a process of another host does
        and ``force_unlock`` is False.
    """
    work_dir = Path(work_dir).absolute()
    work_dir.mkdir(parents=True, exist_ok=True)
    path = work_dir / LOCK_NAME
    ours = _our_record()
    with _guard(work_dir):
        for _ in range(5):
            if _create(path, ours):
                return WorkDirLock(path, ours)
            holder = _read_settled(path)
            if holder is None:
                LOGGER.warning("Work directory lock %s is unreadable; taking it over", path)
            elif holder["host"] != ours["host"]:
                if not force_unlock:
                    raise WorkDirLocked(path, holder, "if that run has ended, --force-unlock "
                                        "overrides the lock")
                LOGGER.warning("Overriding work directory lock %s of %s (force unlock)", path,
                               describe(holder))
            else:
                reason = _stale_reason(holder, ours)
                if reason is None:
                    raise WorkDirLocked(path, holder, "another run is using this work directory")
                LOGGER.warning("Taking over stale work directory lock %s of %s: %s", path,
                               describe(holder), reason)
            path.unlink(missing_ok=True)
    raise WorkDirLocked(path, _read(path) or {}, "it was taken again while being taken over")


@contextmanager
def work_dir_lock(work_dir, *, force_unlock: bool = False):
    """Context manager form of :func:`acquire_work_dir_lock`; yields the :class:`WorkDirLock`."""
    lock = acquire_work_dir_lock(work_dir, force_unlock=force_unlock)
    try:
        yield lock
    finally:
        lock.release()
