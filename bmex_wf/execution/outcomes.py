"""Per-image outcomes of a run: which nodes finished, which crashed and why.

An image is OK only when every node of its workflow finished in the work directory (a
``result_<node>.pklz`` file, written by Nipype when a node completes or is found cached).
Crash files of the run name the failing node, its one-line cause and the file itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Crash:
    """One crash file: the node's full name, the last line of its traceback, the file."""

    node: str
    cause: str
    file: Path

    def describe(self) -> str:
        """``node <name>: <cause> (see <crash file>)``."""
        return f"node {self.node}: {self.cause} (see {self.file.name})"


def node_dirs(workflow, root: Path) -> dict[str, Path]:
    """Working directory of every node that Nipype executes in ``workflow``.

    ``root`` is the folder of ``workflow`` itself (``<base_dir>/<hierarchy>/<name>``).
    IdentityInterface nodes are left out: Nipype drops them from the executed graph.
    """
    from nipype.interfaces.utility import IdentityInterface
    from nipype.pipeline.engine import Workflow

    found = {}
    for node in workflow._graph.nodes():
        if isinstance(node, Workflow):
            found.update(node_dirs(node, root / node.name))
        elif not isinstance(node.interface, IdentityInterface):
            found[f"{workflow.name}.{node.name}"] = root / node.name
    return found


def unfinished_nodes(workflow, root: Path) -> list[str]:
    """Nodes of ``workflow`` (under ``root``) that have no result file: never run or crashed."""
    return sorted(name for name, folder in node_dirs(workflow, root).items()
                  if not (folder / f"result_{folder.name}.pklz").is_file())


def read_crashes(logs_dir: Path, since: float) -> list[Crash]:
    """Crash files written in ``logs_dir`` at or after ``since`` (newest first)."""
    crashes = []
    for path in sorted(Path(logs_dir).glob("crash-*.txt"), key=lambda p: p.stat().st_mtime,
                       reverse=True):
        if path.stat().st_mtime < since:
            continue
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()
                 if line.strip()]
        node = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("Node:")),
                    "?")
        crashes.append(Crash(node=node, cause=lines[-1] if lines else "see the crash file",
                             file=path))
    return crashes


def crashes_of(crashes: list[Crash], workflow_name: str) -> list[Crash]:
    """The crashes of nodes inside the workflow called ``workflow_name``."""
    return [c for c in crashes if f".{workflow_name}." in f".{c.node}"]
