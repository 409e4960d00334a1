"""What happened to each image of a run: OK only when every node of its workflow finished.

The summary line and ``logs/summary-<run>.tsv`` name the failing node, its one-line cause, the
crash file and the expected outputs that are missing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from .config import RunConfig

LOGGER = logging.getLogger("bmex_wf.cli")

@dataclass
class Outcome:
    """What happened to one image."""

    image: str
    status: str = "pending"  # "ok", "failed"
    reason: str = ""
    node: str = ""
    crash_file: str = ""
    missing: list = field(default_factory=list)


def image_workflows(workflow, root: Path) -> dict:
    """``{name: (workflow, folder)}`` of every per-image workflow (one holding a ``bmex_wf``)."""
    from nipype.pipeline.engine import Workflow

    found = {}
    for node in workflow._graph.nodes():
        if isinstance(node, Workflow):
            folder = root / node.name
            if any(isinstance(n, Workflow) and n.name == "bmex_wf" for n in node._graph.nodes()):
                found[node.name] = (node, folder)
            else:
                found.update(image_workflows(node, folder))
    return found


def expected_outputs(cfg: RunConfig, job, image_wf) -> list[Path]:
    """The files an image must have: its derivatives (network-grid ones too when it has their
    sink), and its volume table when it has a sink."""
    from ..bids.derivatives import derivative_folder, derivative_names, source_entities

    folder = derivative_folder(cfg.output_dir, job.path, cfg.bids_dir)
    names = list(derivative_names(job.path.name, job.contrast).values())
    grid_sink = image_wf.get_node("ds_network_grid") if image_wf is not None else None
    if grid_sink is not None:
        names += derivative_names(job.path.name, job.contrast, grid_sink.inputs.voxel_mm).values()
    if image_wf is not None and image_wf.get_node("ds_volumes") is not None:
        names.append(f"{source_entities(job.path.name, job.contrast)}_space-{job.contrast}"
                     "_desc-volumes_morph.tsv")
    return [folder / name for name in names]


def collect_outcomes(cfg: RunConfig, workflow, jobs: list, outcomes: dict, since: float,
             logs_dir: Path) -> None:
    """Mark an image OK only when every node of its workflow finished and its outputs exist."""
    from ..execution.outcomes import crashes_of, read_crashes, unfinished_nodes

    crashes = read_crashes(logs_dir, since)
    image_wfs = image_workflows(workflow, Path(cfg.work_dir) / workflow.name)
    for job in jobs:
        key = str(job.path.relative_to(cfg.bids_dir)) if cfg.bids_dir else job.path.name
        outcome = outcomes[key]
        name = f"{job.name}_wf"
        failed = crashes_of(crashes, name)
        image_wf, folder = image_wfs.get(name, (None, None))
        pending = unfinished_nodes(image_wf, folder) if image_wf is not None else [name]
        outcome.missing = [str(p.relative_to(cfg.output_dir))
                           for p in expected_outputs(cfg, job, image_wf) if not p.is_file()]
        if not failed and not pending and not outcome.missing:
            outcome.status = "ok"
            continue
        outcome.status = "failed"
        if failed:
            outcome.node, outcome.crash_file = failed[0].node, str(failed[0].file)
            outcome.reason = failed[0].describe()
        elif pending:
            outcome.node = pending[0]
            outcome.reason = (f"{len(pending)} step(s) did not finish, first {pending[0]} "
                              "(see the log and the crash files in logs/)")
        else:
            outcome.reason = "expected outputs are missing"


def log_summary(outcomes: dict) -> int:
    failed = [o for o in outcomes.values() if o.status != "ok"]
    LOGGER.info("Summary: %d of %d images processed successfully.",
                len(outcomes) - len(failed), len(outcomes))
    for outcome in outcomes.values():
        if outcome.status == "ok":
            LOGGER.info("  OK      %s", outcome.image)
        else:
            LOGGER.error("  FAILED  %s: %s", outcome.image,
                         outcome.reason or "not run (stopped by --stop-on-first-crash)")
            if outcome.missing:
                LOGGER.error("          missing outputs: %s", ", ".join(outcome.missing))
    return 1 if failed or not outcomes else 0


def write_summary(logs_dir: Path, run_uuid: str, outcomes: dict) -> Path:
    from ..bids.derivatives import atomic_write_text

    def cell(text) -> str:
        return str(text).replace("\t", " ").replace("\n", " ") or "n/a"

    rows = ["image\tstatus\tnode\treason\tcrash_file\tmissing_outputs"] + [
        "\t".join([o.image, o.status, cell(o.node), cell(o.reason), cell(o.crash_file),
                   cell(", ".join(o.missing))])
        for o in outcomes.values()]
    return atomic_write_text(logs_dir / f"summary-{run_uuid}.tsv", "\n".join(rows) + "\n")
