"""Worker processes, and the processes they start, that die with the run's main process.

After ``kill -9`` of a run, its MultiProc workers would go on computing. Each worker therefore

* watches the run's main process (pid and start time) from a thread once a second; when it
  is gone, the worker kills its own descendants and exits. This is what ends ``forkserver``
  workers: their parent is the fork server, which lives on as long as they do (each worker
  holds the fork server's "alive" pipe), and
* asks the kernel for SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``): with the
  ``fork`` and ``spawn`` contexts the parent is the main process, and the worker dies at once,
  even while a long C call holds the interpreter.

A child process that a node starts dies with its worker, whatever kills it, when it runs
:func:`die_with_parent_code` first (as the registration child does); other children are
killed by the watchdog, that is, unless the kernel killed the worker first. All of this is
Linux only and a no-op elsewhere.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time

from .processes import descendants, pid_running, process_start_time

LOGGER = logging.getLogger(__name__)

#: ``PR_SET_PDEATHSIG`` of ``<linux/prctl.h>``.
PR_SET_PDEATHSIG = 1
#: Seconds between two checks of the run's main process by a worker's watchdog.
WATCH_INTERVAL_S = 1.0
#: Exit code of a worker whose run's main process is gone.
ORPHAN_EXIT_CODE = 70
LINUX = sys.platform.startswith("linux")


def set_parent_death_signal(sig: int = signal.SIGKILL) -> bool:
    """Have the kernel send ``sig`` to this process when its parent dies; False if unsupported."""
    if not LINUX:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def kill_descendants(pid: int | None = None) -> list[int]:
    """SIGKILL every descendant of ``pid`` (default: this process); returns their pids.

    They are stopped first, until no new one appears, so none can fork away meanwhile.
    """
    pid = os.getpid() if pid is None else pid
    stopped: list[int] = []
    for _ in range(10):
        new = [p for p in descendants(pid) if p not in stopped]
        if not new:
            break
        for child in new:
            try:
                os.kill(child, signal.SIGSTOP)
            except OSError:
                pass
        stopped.extend(new)
    for child in stopped:
        try:
            os.kill(child, signal.SIGKILL)
        except OSError:
            pass
    return stopped


def _watch(main_pid: int, main_start: int | None, interval: float) -> None:
    while pid_running(main_pid, main_start):
        time.sleep(interval)
    kill_descendants()
    os._exit(ORPHAN_EXIT_CODE)


def install_worker_guard(main_pid: int, main_start: int | None = None, *,
                         interval: float = WATCH_INTERVAL_S) -> bool:
    """Make this process die with its parent and with process ``main_pid``; False if not Linux.

    ``main_start`` is the start time of ``main_pid`` (:func:`process_start_time`), so that a
    later process reusing the pid does not keep this one alive.
    """
    if not LINUX:
        return False
    set_parent_death_signal(signal.SIGKILL)
    threading.Thread(target=_watch, args=(main_pid, main_start, interval),
                     name="bmex-wf-main-watchdog", daemon=True).start()
    return True


def main_process() -> tuple[int, int | None]:
    """``(pid, start time)`` of this process, as given to :func:`install_worker_guard`."""
    pid = os.getpid()
    return pid, process_start_time(pid)


def worker_initializer(nipype_initializer, cwd: str, main_pid: int,
                       main_start: int | None) -> None:
    """Pool initializer: Nipype's own (``nipype_initializer(cwd)``), then the worker guard."""
    nipype_initializer(cwd)
    install_worker_guard(main_pid, main_start)


_CHILD_GUARD = """\
def _bmex_wf_die_with_parent(parent):
    import os, sys
    if sys.platform.startswith("linux"):
        try:
            import ctypes, signal
            ctypes.CDLL(None).prctl(1, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:
            os._exit(1)
_bmex_wf_die_with_parent({parent})
del _bmex_wf_die_with_parent
"""


def die_with_parent_code(parent_pid: int | None = None) -> str:
    """Python source making a ``python -c`` child die with its parent; put it before the code.

    The child asks for SIGKILL at its parent's death, and exits at once if the parent
    (``parent_pid``, default this process) is already gone. Needs no import of bmex_wf.
    """
    return _CHILD_GUARD.format(parent=os.getpid() if parent_pid is None else int(parent_pid))
