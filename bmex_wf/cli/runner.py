"""Running a built workflow with the configured Nipype plugin (shared by every level)."""

from __future__ import annotations

import logging
from pathlib import Path

from .config import RunConfig
from .prerequisites import check_prerequisites

LOGGER = logging.getLogger("bmex_wf.cli")


def setup_logging(verbose: int) -> None:
    level = max(logging.DEBUG, logging.INFO - 10 * verbose)
    logging.getLogger("bmex_wf").setLevel(level)
    logging.getLogger("nipype.workflow").setLevel(
        logging.INFO if verbose else logging.WARNING)


def configure_nipype(workflow, cfg: RunConfig, logs_dir: Path) -> None:
    from nipype import config as ncfg

    execution = {
        "crashdump_dir": str(logs_dir), "crashfile_format": "txt",
        "stop_on_first_crash": cfg.stop_on_first_crash, "remove_unnecessary_outputs": False,
        "write_provenance": cfg.write_provenance, "parameterize_dirs": False,
        "get_linked_libs": False,
    }
    workflow.config["execution"].update(execution)
    if cfg.resource_monitor:
        ncfg.enable_resource_monitor()
        workflow.config.setdefault("monitoring", {}).update(
            {"enabled": True, "sample_frequency": "0.5", "summary_append": True})


def run_workflow(workflow, cfg: RunConfig) -> None:
    """Run with the configured plugin; Nipype errors are logged, never raised."""
    from ..execution.plugins import run_with_plugin

    LOGGER.info("Running with plugin %s %s", cfg.plugin, cfg.plugin_args)
    try:
        run_with_plugin(workflow, cfg.plugin, cfg.plugin_args)
    except Exception as exc:  # noqa: BLE001 - per-image results are collected afterwards
        LOGGER.error("The workflow did not finish cleanly: %s", str(exc).splitlines()[0]
                     if str(exc) else type(exc).__name__)


def check_run_prerequisites(cfg: RunConfig) -> None:
    check_prerequisites(output_dir=cfg.output_dir, work_dir=cfg.work_dir, plugin=cfg.plugin,
                        device=cfg.device, write_graph=cfg.write_graph)
