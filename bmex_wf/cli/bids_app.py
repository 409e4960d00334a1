"""Running the BIDS App (participant and group levels) and ``bmex-wf enhance``.

Participant level: find the images with pybids, look up each age, choose each model, build one
``init_bmex_wf`` per image inside one workflow per participant, run it with a Nipype plugin
(``--use-plugin`` or MultiProc), then report per image what succeeded and what failed.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..execution.workdir_lock import WorkDirLocked, work_dir_lock
from .config import RunConfig
from .parser import load_plugin_file, parse_args, parse_enhance_args
from .prerequisites import MissingPrerequisite, check_prerequisites

LOGGER = logging.getLogger("bmex_wf.cli")
#: Registration settings of ``--sloppy`` (testing only).
SLOPPY_REGISTRATION = {"iterations": "quick", "spacing_mm": 2.0}


@dataclass
class Outcome:
    """What happened to one image."""

    image: str
    status: str = "pending"  # "ok", "failed"
    reason: str = ""
    node: str = ""
    crash_file: str = ""
    missing: list = field(default_factory=list)


# --------------------------------------------------------------------------- setup
def _setup_logging(verbose: int) -> None:
    level = max(logging.DEBUG, logging.INFO - 10 * verbose)
    logging.getLogger("bmex_wf").setLevel(level)
    logging.getLogger("nipype.workflow").setLevel(
        logging.INFO if verbose else logging.WARNING)


def resolve_use_gpu(device: str) -> bool:
    """``--device`` -> ``use_gpu``, decided once; ``cpu`` never probes for a GPU."""
    if device == "cpu":
        return False
    import torch

    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        LOGGER.warning("--device cuda: no CUDA device on this machine; the enhancement nodes "
                       "will need one where they run")
    return True if device == "cuda" else available


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def build_config(opts) -> RunConfig:
    """Resolve command-line options into a :class:`RunConfig`."""
    cfg = RunConfig.from_namespace(opts)
    if getattr(opts, "loaded_run_uuid", None):
        LOGGER.info("Options reloaded from %s (earlier run %s)", opts.config_file,
                    opts.loaded_run_uuid)
    cfg.work_dir = Path(opts.work_dir or Path.cwd() / "work").absolute()
    cfg.nprocs = cfg.nprocs or _cpu_count()
    cfg.omp_nthreads = cfg.omp_nthreads or min(8, cfg.nprocs)
    cfg.use_gpu = resolve_use_gpu(cfg.device)
    if cfg.use_plugin:
        cfg.plugin, cfg.plugin_args = load_plugin_file(cfg.use_plugin)
    else:
        cfg.plugin, cfg.plugin_args = "MultiProc", {}
    if cfg.plugin in ("MultiProc", "LegacyMultiProc"):
        cfg.plugin_args.setdefault("n_procs", cfg.nprocs)
        if cfg.mem_gb:
            cfg.plugin_args.setdefault("memory_gb", cfg.mem_gb)
        cfg.plugin_args.setdefault("raise_insufficient", False)
        cfg.plugin_args.setdefault("maxtasksperchild", 1)
        # Forked workers can deadlock in PyTorch/OpenMP state inherited from this process.
        cfg.plugin_args.setdefault("mp_context", "forkserver")
    return cfg


# --------------------------------------------------------------------------- planning
def _enhance_model(group: str, contrast: str, models_dir):
    """The enhancement model for an image (official, else the built-in one when shipped)."""
    from ..models.registry import resolve_enhance_model

    resolved = resolve_enhance_model(group, contrast, models_dir)
    if resolved.builtin:
        LOGGER.warning("NO OFFICIAL BME-X WEIGHTS FOUND: %s %s uses the built-in model %s; "
                       "see 'bmex-wf models'", group, contrast, resolved.path)
    return resolved


def plan_jobs(cfg: RunConfig, outcomes: dict) -> list:
    """One :class:`ImageJob` per image that can be processed; failures go to ``outcomes``."""
    from ..age import AgeError, age_from_override
    from ..bids.ages import lookup_age
    from ..bids.inputs import find_images, find_precomputed_mask
    from ..image.io import load_enhanceable
    from ..workflows.participant import ImageJob

    images = find_images(cfg.bids_dir, cfg.participant_label, cfg.session_label,
                         cfg.bids_filters)
    if not images:
        raise ValueError(f"{cfg.bids_dir}: no T1w or T2w image matches the selection "
                         "(--participant-label, --session-label, --bids-filter-file)")
    jobs = []
    for image in images:
        key = str(image["path"].relative_to(cfg.bids_dir))
        outcomes[key] = Outcome(key)
    for image in images:
        path = image["path"]
        key = str(path.relative_to(cfg.bids_dir))
        try:
            age = (age_from_override(cfg.age_months) if cfg.age_months is not None
                   else lookup_age(cfg.bids_dir, path))
            mask = find_precomputed_mask(cfg.derivatives, path, image["contrast"])
            if cfg.brain_mask_source == "precomputed" and mask is None:
                raise ValueError(f"{path.name}: no desc-brain_mask in "
                                 f"{', '.join(map(str, cfg.derivatives))}")
            if cfg.brain_mask_source not in ("auto", "precomputed"):
                mask = None
            job = ImageJob(path=path, contrast=image["contrast"], age=age,
                           subject=image["subject"], session=image["session"], mask=mask)
            model = _enhance_model(job.group, job.contrast, cfg.models_dir)
            load_enhanceable(path, model.entry.voxel_mm)
        except (AgeError, FileNotFoundError, ValueError) as exc:
            outcomes[key].status, outcomes[key].reason = "failed", str(exc)
            LOGGER.error("%s: %s", key, exc)
            if cfg.stop_on_first_crash:
                break
            continue
        LOGGER.info("%s: age %.2f months (%s), group %s, from %s", key, age.months,
                    "fetal" if age.fetal else "postnatal", job.group, age.source)
        jobs.append(job)
    return jobs


def build_workflow(cfg: RunConfig, jobs: list, outcomes: dict):
    """Top-level workflow: one participant workflow per subject; build errors are recorded."""
    from niworkflows.engine.workflows import LiterateWorkflow as Workflow

    from ..execution.plugins import apply_node_resources
    from ..spaces.templateflow import parse_output_spaces
    from ..workflows.participant import init_participant_wf, request_gpu

    workflow = Workflow(name="bmex_wf", base_dir=str(cfg.work_dir))
    by_subject = defaultdict(list)
    for job in jobs:
        by_subject[job.subject].append(job)
    settings = {"output_dir": cfg.output_dir, "bids_dir": cfg.bids_dir,
                "models_dir": cfg.models_dir, "mask_source": cfg.brain_mask_source,
                "use_gpu": cfg.use_gpu, "omp_nthreads": cfg.omp_nthreads, "tiling": cfg.tiling,
                "precision": cfg.precision,
                "output_spaces": parse_output_spaces(cfg.output_spaces),
                "registration": SLOPPY_REGISTRATION if cfg.sloppy else None}
    built = []
    for subject, sub_jobs in by_subject.items():
        try:
            workflow.add_nodes([init_participant_wf(subject=subject, jobs=sub_jobs, **settings)])
            built += sub_jobs
            continue
        except (ValueError, FileNotFoundError, OSError):
            LOGGER.debug("sub-%s: building image by image to find the failing one", subject)
        kept = []
        for job in sub_jobs:  # one bad image must not sink the subject's other images
            try:
                init_participant_wf(subject=subject, jobs=[job], **settings)
                kept.append(job)
            except (ValueError, FileNotFoundError, OSError) as exc:
                key = str(job.path.relative_to(cfg.bids_dir))
                outcomes[key].status, outcomes[key].reason = "failed", str(exc)
                LOGGER.error("%s: cannot build its workflow: %s", key, exc)
        if kept:
            workflow.add_nodes([init_participant_wf(subject=subject, jobs=kept, **settings)])
            built += kept
    if cfg.device == "cuda":
        request_gpu(workflow)
    apply_node_resources(workflow, cfg.plugin, cfg.plugin_args, gpu=cfg.device == "cuda")
    return workflow, built


# --------------------------------------------------------------------------- execution
def _configure(workflow, cfg: RunConfig, logs_dir: Path) -> None:
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


def citation_text(workflow) -> str:
    """``CITATION.md`` text from the workflow boilerplate (``__desc__`` of every level)."""
    body = workflow.visit_desc().strip()
    head = (f"Results included in this manuscript come from enhancement performed using "
            f"*bmex-wf* {__version__}, which is based on *Nipype* [@nipype1].")
    return f"{head}\n\n{body}\n" if body else head + "\n"


_NIPYPE_BIB = """@article{nipype1,
  author = {Gorgolewski, K. and Burns, C. D. and Madison, C. and Clark, D. and Halchenko, Y. O. and Waskom, M. L. and Ghosh, S.},
  title = {Nipype: a flexible, lightweight and extensible neuroimaging data processing framework in Python},
  journal = {Frontiers in Neuroinformatics},
  volume = {5},
  pages = {13},
  year = {2011},
  doi = {10.3389/fninf.2011.00013}
}"""


def _bibtex() -> str:
    from importlib import resources

    extra = resources.files("bmex_wf.data").joinpath("boilerplate.bib")
    return _NIPYPE_BIB + ("\n\n" + extra.read_text() if extra.is_file() else "")


def _image_workflows(workflow, root: Path) -> dict:
    """``{name: (workflow, folder)}`` of every per-image workflow (one holding a ``bmex_wf``)."""
    from nipype.pipeline.engine import Workflow

    found = {}
    for node in workflow._graph.nodes():
        if isinstance(node, Workflow):
            folder = root / node.name
            if any(isinstance(n, Workflow) and n.name == "bmex_wf" for n in node._graph.nodes()):
                found[node.name] = (node, folder)
            else:
                found.update(_image_workflows(node, folder))
    return found


def _expected_outputs(cfg: RunConfig, job, image_wf) -> list[Path]:
    """The files an image must have: its derivatives, and its volume table when it has a sink."""
    from ..bids.derivatives import derivative_folder, derivative_names, source_entities

    folder = derivative_folder(cfg.output_dir, job.path, cfg.bids_dir)
    names = list(derivative_names(job.path.name, job.contrast).values())
    if image_wf is not None and image_wf.get_node("ds_volumes") is not None:
        names.append(f"{source_entities(job.path.name, job.contrast)}_space-{job.contrast}"
                     "_desc-volumes_morph.tsv")
    return [folder / name for name in names]


def _collect(cfg: RunConfig, workflow, jobs: list, outcomes: dict, since: float,
             logs_dir: Path) -> None:
    """Mark an image OK only when every node of its workflow finished and its outputs exist."""
    from ..execution.outcomes import crashes_of, read_crashes, unfinished_nodes

    crashes = read_crashes(logs_dir, since)
    image_wfs = _image_workflows(workflow, Path(cfg.work_dir) / workflow.name)
    for job in jobs:
        key = str(job.path.relative_to(cfg.bids_dir)) if cfg.bids_dir else job.path.name
        outcome = outcomes[key]
        name = f"{job.name}_wf"
        failed = crashes_of(crashes, name)
        image_wf, folder = image_wfs.get(name, (None, None))
        pending = unfinished_nodes(image_wf, folder) if image_wf is not None else [name]
        outcome.missing = [str(p.relative_to(cfg.output_dir))
                           for p in _expected_outputs(cfg, job, image_wf) if not p.is_file()]
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


def _summary(outcomes: dict) -> int:
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


def _write_summary(logs_dir: Path, run_uuid: str, outcomes: dict) -> Path:
    from ..bids.derivatives import atomic_write_text

    def cell(text) -> str:
        return str(text).replace("\t", " ").replace("\n", " ") or "n/a"

    rows = ["image\tstatus\tnode\treason\tcrash_file\tmissing_outputs"] + [
        "\t".join([o.image, o.status, cell(o.node), cell(o.reason), cell(o.crash_file),
                   cell(", ".join(o.missing))])
        for o in outcomes.values()]
    return atomic_write_text(logs_dir / f"summary-{run_uuid}.tsv", "\n".join(rows) + "\n")


def _reports_module():
    try:
        from .. import reports
    except ImportError:
        LOGGER.info("Visual reports need the bmex_wf.reports module, which is not available "
                    "in this installation; skipped.")
        return None
    return reports


def subject_reports(cfg: RunConfig, subjects) -> dict[str, str]:
    """``sub-<label>.html`` for each subject; returns ``{subject: why}`` of reports not written."""
    reports = _reports_module()
    failed = {}
    for subject in sorted(set(subjects)) if reports else ():
        try:
            page = reports.generate_subject_report(cfg.output_dir, subject, run_uuid=cfg.run_uuid)
            LOGGER.info("Report written: %s", page)
        except (reports.ReportError, OSError, ValueError) as exc:
            LOGGER.error("sub-%s: report not written: %s", subject, exc)
            failed[subject] = f"report sub-{subject}.html not written: {exc}"
    return failed


def _report_outcomes(cfg: RunConfig, jobs: list, outcomes: dict) -> None:
    """Write the subject reports; an image whose report failed is failed too."""
    failed = subject_reports(cfg, [job.subject for job in jobs if job.subject])
    for job in jobs:
        key = str(job.path.relative_to(cfg.bids_dir)) if cfg.bids_dir else job.path.name
        if job.subject in failed and outcomes[key].status == "ok":
            outcomes[key].status, outcomes[key].reason = "failed", failed[job.subject]


def reports_only(cfg: RunConfig) -> int:
    """``--reports-only``: rebuild the subject pages from existing outputs."""
    reports = _reports_module()
    if reports is None:
        return 1
    try:
        pages = reports.rebuild_reports(cfg.output_dir, cfg.participant_label or None,
                                        run_uuid=cfg.run_uuid, group=False)
    except (reports.ReportError, OSError, ValueError) as exc:
        LOGGER.error("%s", exc)
        return 1
    LOGGER.info("Reports rebuilt: %s", ", ".join(str(p) for p in pages))
    return 0


def _failures_from_summaries(logs_dir: Path) -> list[dict]:
    """Images whose latest participant run failed, from ``logs/summary-*.tsv``."""
    from ..bids.ages import read_tsv

    latest = {}
    for table in sorted(logs_dir.glob("summary-*.tsv"), key=lambda p: p.stat().st_mtime):
        for row in read_tsv(table):
            latest[row["image"]] = row
    failures = []
    for image, row in latest.items():
        if row["status"] != "ok":
            name = Path(image).name
            ents = dict(part.split("-", 1) for part in name.split("_") if "-" in part)
            failures.append({"subject": ents.get("sub"), "session": ents.get("ses"),
                             "contrast": name.split("_")[-1].split(".")[0],
                             "source": name.split(".")[0], "error": row["reason"],
                             "status": "failed"})
    return failures


def run_group(cfg: RunConfig) -> int:
    """Group level: ``group_qc.tsv`` and ``group.html`` from the participant outputs."""
    reports = _reports_module()
    if reports is None:
        return 1
    try:
        tsv, page = reports.run_group_level(
            cfg.output_dir, _failures_from_summaries(cfg.output_dir / "logs"))
    except (reports.ReportError, OSError, ValueError) as exc:
        LOGGER.error("%s", exc)
        return 1
    LOGGER.info("Group outputs: %s, %s", tsv, page)
    return 0


def run_workflow(workflow, cfg: RunConfig) -> None:
    """Run with the configured plugin; Nipype errors are logged, never raised."""
    from ..execution.plugins import run_with_plugin

    LOGGER.info("Running with plugin %s %s", cfg.plugin, cfg.plugin_args)
    try:
        run_with_plugin(workflow, cfg.plugin, cfg.plugin_args)
    except Exception as exc:  # noqa: BLE001 - per-image results are collected afterwards
        LOGGER.error("The workflow did not finish cleanly: %s", str(exc).splitlines()[0]
                     if str(exc) else type(exc).__name__)


def run_participant(cfg: RunConfig) -> int:
    """Participant level; returns the exit code (0 only if every image succeeded)."""
    try:
        _check_prerequisites(cfg)
        with work_dir_lock(cfg.work_dir, force_unlock=cfg.force_unlock):
            return _run_participant(cfg)
    except (MissingPrerequisite, WorkDirLocked) as exc:
        LOGGER.error("%s", exc)
        return 2


def _run_participant(cfg: RunConfig) -> int:
    from ..bids.derivatives import write_citation, write_dataset_files
    from ..bids.inputs import validation_warnings

    if cfg.clean_workdir and cfg.work_dir.exists():
        LOGGER.info("Emptying the work directory %s", cfg.work_dir)
        for entry in cfg.work_dir.iterdir():  # the lock file stays
            if entry.name.startswith(".bmex-wf.lock"):
                continue
            shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
    logs_dir = cfg.output_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    LOGGER.info("Run %s: configuration written to %s", cfg.run_uuid, cfg.write())
    cfg.write(logs_dir / f"config-{cfg.run_uuid}.toml")
    try:
        write_dataset_files(cfg.output_dir, cfg.bids_dir)
    except ValueError as exc:
        LOGGER.error("%s", exc)
        return 1
    if cfg.reports_only:
        return reports_only(cfg)
    if not cfg.skip_bids_validation:
        for problem in validation_warnings(cfg.bids_dir):
            LOGGER.warning("BIDS validation: %s", problem)
    outcomes: dict[str, Outcome] = {}
    try:
        jobs = plan_jobs(cfg, outcomes)
    except ValueError as exc:
        LOGGER.error("%s", exc)
        return 1
    if cfg.stop_on_first_crash and any(o.status == "failed" for o in outcomes.values()):
        return _summary(outcomes)
    workflow, jobs = build_workflow(cfg, jobs, outcomes)
    write_citation(cfg.output_dir, citation_text(workflow), _bibtex())
    if cfg.boilerplate_only:
        LOGGER.info("Boilerplate written to %s", logs_dir / "CITATION.md")
        return 0
    if cfg.write_graph:
        _write_graph(workflow)
    if jobs and not (cfg.stop_on_first_crash and any(
            o.status == "failed" for o in outcomes.values())):
        _configure(workflow, cfg, logs_dir)
        start = time.time()
        run_workflow(workflow, cfg)
        _collect(cfg, workflow, jobs, outcomes, start, logs_dir)
        _report_outcomes(cfg, jobs, outcomes)
    _write_summary(logs_dir, cfg.run_uuid, outcomes)
    return _summary(outcomes)


def _check_prerequisites(cfg: RunConfig) -> None:
    check_prerequisites(output_dir=cfg.output_dir, work_dir=cfg.work_dir, plugin=cfg.plugin,
                        device=cfg.device, write_graph=bool(getattr(cfg, "write_graph", False)))


def _write_graph(workflow) -> None:
    try:
        workflow.write_graph(graph2use="colored", format="svg", simple_form=True)
    except Exception as exc:  # noqa: BLE001 - Graphviz is optional
        LOGGER.warning("--write-graph: could not write the graph (%s)", exc)


def bids_app_main(argv) -> int:
    """Parse BIDS App arguments and run the requested level; returns the exit code."""
    opts = parse_args(argv)
    _setup_logging(opts.verbose)
    cfg = build_config(opts)
    if cfg.analysis_level == "group":
        return run_group(cfg)
    return run_participant(cfg)


# --------------------------------------------------------------------------- enhance
def enhance_main(argv) -> int:
    """``bmex-wf enhance IN OUT_DIR --age-months N``: one image outside BIDS."""
    opts = parse_enhance_args(argv)
    _setup_logging(opts.verbose)
    opts.work_dir = opts.work_dir or opts.output_dir / "work"
    cfg = build_config(opts)  # the participant level's defaults and plugin handling
    try:
        _check_prerequisites(cfg)
        with work_dir_lock(cfg.work_dir, force_unlock=cfg.force_unlock):
            return _run_enhance(cfg, opts)
    except (MissingPrerequisite, WorkDirLocked) as exc:
        LOGGER.error("%s", exc)
        return 2


def _run_enhance(cfg: RunConfig, opts) -> int:
    """Plan, build and run ``bmex-wf enhance`` for one image (``cfg`` resolved)."""
    from niworkflows.engine.workflows import LiterateWorkflow as Workflow

    from ..age import age_from_override
    from ..bids.derivatives import write_citation
    from ..image.io import load_enhanceable
    from ..workflows.participant import ImageJob, init_image_wf

    key = opts.in_file.name
    outcomes = {key: Outcome(key)}
    # Reports are filed per subject: only for inputs named like BIDS files (sub-<label>_...).
    named = re.match(r"sub-([A-Za-z0-9]+)_", key)
    subject = named.group(1) if named else None
    try:
        job = ImageJob(path=opts.in_file, contrast=opts.contrast,
                       age=age_from_override(opts.age_months), mask=opts.mask)
        model = _enhance_model(job.group, job.contrast, cfg.models_dir)
        load_enhanceable(job.path, model.entry.voxel_mm)
        workflow = Workflow(name="bmex_enhance", base_dir=str(cfg.work_dir))
        workflow.add_nodes([init_image_wf(
            job=job, output_dir=cfg.output_dir, models_dir=cfg.models_dir,
            mask_source=cfg.brain_mask_source, use_gpu=cfg.use_gpu,
            omp_nthreads=cfg.omp_nthreads, tiling=cfg.tiling, precision=cfg.precision,
            reports=subject is not None, output_spaces=opts.output_spaces or [])])
    except (FileNotFoundError, ValueError) as exc:
        outcomes[key].status, outcomes[key].reason = "failed", str(exc)
        return _summary(outcomes)
    logs_dir = cfg.output_dir / "logs"
    logs_dir.mkdir(parents=True, exist_ok=True)
    cfg.work_dir.mkdir(parents=True, exist_ok=True)
    cfg.write()
    write_citation(cfg.output_dir, citation_text(workflow), _bibtex())
    _configure(workflow, cfg, logs_dir)
    start = time.time()
    run_workflow(workflow, cfg)
    _collect(cfg, workflow, [job], outcomes, start, logs_dir)
    if subject is not None:
        _report_outcomes(cfg, [dataclasses.replace(job, subject=subject)], outcomes)
    return _summary(outcomes)


def subcommand_main(name: str, argv) -> int:
    """The ``enhance`` subcommand (``models``, ``demo`` and ``train`` have their own modules)."""
    if name == "enhance":
        return enhance_main(argv)
    raise ValueError(f"unknown subcommand {name!r}")
