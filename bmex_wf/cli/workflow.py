"""Planning and building a participant-level run: one job per image, its workflow, citations.

Each image gets its age, its model and an input check before any workflow is built; a build
error fails only that image. The boilerplate of the built workflow becomes ``CITATION.md``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import defaultdict

from .. import __version__
from .config import RunConfig
from .outcomes import Outcome

LOGGER = logging.getLogger("bmex_wf.cli")

#: Name of the participant level's top workflow (its folder in the work directory); each image's
#: ``init_bmex_wf`` inside it is called ``bmex_wf``.
APP_WORKFLOW = "bmex_participant_wf"
#: Registration settings of ``--sloppy`` (testing only).
SLOPPY_REGISTRATION = {"iterations": "quick", "spacing_mm": 2.0}


def resolve_model(group: str, contrast: str, models_dir):
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
            job = dataclasses.replace(job, model=resolve_model(job.group, job.contrast,
                                                               cfg.models_dir))
            load_enhanceable(path, job.model.entry.voxel_mm)
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
    from ..workflows.participant import init_participant_wf

    workflow = Workflow(name=APP_WORKFLOW, base_dir=str(cfg.work_dir))
    by_subject = defaultdict(list)
    for job in jobs:
        by_subject[job.subject].append(job)
    settings = {"output_dir": cfg.output_dir, "bids_dir": cfg.bids_dir,
                "models_dir": cfg.models_dir, "mask_source": cfg.brain_mask_source,
                "use_gpu": cfg.use_gpu, "omp_nthreads": cfg.omp_nthreads, "tiling": cfg.tiling,
                "precision": cfg.precision, "output_resolution": cfg.output_resolution,
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
    apply_node_resources(workflow, cfg.plugin, cfg.plugin_args, gpu=cfg.device == "cuda")
    return workflow, built


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


def bibtex() -> str:
    from importlib import resources

    extra = resources.files("bmex_wf.data").joinpath("boilerplate.bib")
    return _NIPYPE_BIB + ("\n\n" + extra.read_text() if extra.is_file() else "")


def write_graph(workflow) -> None:
    try:
        workflow.write_graph(graph2use="colored", format="svg", simple_form=True)
    except Exception as exc:  # noqa: BLE001 - Graphviz is optional
        LOGGER.warning("--write-graph: could not write the graph (%s)", exc)
