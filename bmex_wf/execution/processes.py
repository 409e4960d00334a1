"""Process liveness and identity from ``/proc`` (Linux), with a portable fallback."""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of ``/proc/<pid>/stat`` after the command name (state first); None if unreadable."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    return text[text.rindex(")") + 2:].split()


def has_proc() -> bool:
    """Whether ``/proc/<pid>/stat`` can be read on this system."""
    return (_PROC / "self" / "stat").exists()


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks after boot (``/proc/<pid>/stat``); None if unknown."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None
    except (IndexError, ValueError):
        return None


def pid_running(pid: int, start_time: int | None = None) -> bool:
    """Whether process ``pid`` exists and is not a zombie.

    With ``start_time`` (from :func:`process_start_time`) a process whose start time differs,
    a later process that reuses the pid, does not count.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    except (OverflowError, OSError):
        return False
    fields = _stat_fields(pid)
    if fields is None:
        return not has_proc()  # gone since os.kill, or no /proc to ask
    if fields[0] in ("Z", "X"):
        return False
    return start_time is None or len(fields) < 20 or fields[19] == str(start_time)


def descendants(pid: int) -> list[int]:
    """Living descendants of ``pid`` (children first), from ``/proc``; empty without it."""
    children: dict[int, list[int]] = {}
    try:
        entries = [p for p in os.listdir(_PROC) if p.isdigit()]
    except OSError:
        return []
    for entry in entries:
        fields = _stat_fields(int(entry))
        if fields and fields[0] not in ("Z", "X"):
            children.setdefault(int(fields[1]), []).append(int(entry))
    found, queue = [], list(children.get(pid, []))
    while queue:
        child = queue.pop(0)
        found.append(child)
        queue.extend(children.get(child, []))
    return found
