"""What the chosen options need, checked before any workflow is built (exit code 2)."""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
from pathlib import Path

#: Plugins that run the nodes on this machine (so ``--device cuda`` needs a GPU here).
LOCAL_PLUGINS = ("MultiProc", "LegacyMultiProc", "Linear")


class MissingPrerequisite(RuntimeError):
    """Software, a device or a writable folder that the options need is missing."""


def _writable(folder: Path, role: str) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".bmex-wf-write-test"):
            pass
    except OSError as exc:
        raise MissingPrerequisite(f"{role} {folder} is not writable ({exc.strerror or exc})") from None


def check_prerequisites(*, output_dir: Path, work_dir: Path, plugin: str, device: str,
                        write_graph: bool = False, needs_ants: bool = True) -> None:
    """Raise :class:`MissingPrerequisite` (one line naming what to install) when one is missing.

    ``needs_ants``: tissue volumes and registration run antspyx. ``device``: CUDA is checked
    only when ``plugin`` runs nodes on this machine (a SLURM submit host may have no GPU).
    """
    if needs_ants and importlib.util.find_spec("ants") is None:
        raise MissingPrerequisite("antspyx is not installed: tissue volumes and --output-spaces "
                                  "need it; install it with 'pip install antspyx'")
    if write_graph and shutil.which("dot") is None:
        raise MissingPrerequisite("--write-graph needs Graphviz's 'dot' program; install Graphviz "
                                  "(e.g. 'apt install graphviz') or drop --write-graph")
    if device == "cuda" and plugin in LOCAL_PLUGINS:
        import torch

        if not torch.cuda.is_available():
            raise MissingPrerequisite(f"--device cuda: no CUDA device is available on this machine, "
                                      f"where the {plugin} plugin runs the nodes; use --device auto "
                                      "or cpu")
    _writable(Path(output_dir), "OUTPUT_DIR")
    _writable(Path(work_dir), "work directory")
