"""Participant-level workflow: one ``init_bmex_wf`` per image, each followed by a sink."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ..age import AgeInfo, age_group
from ..interfaces.bids import BMEXDerivativesSink, BMEXSpaceSink, BMEXVolumesSink
from ..models.registry import ResolvedModel, resolve_enhance_model
from ..spaces.templateflow import OutputSpace, resolve_space

#: Outputnode fields of ``init_bmex_wf`` written by the sink (same names on both sides).
SINK_FIELDS = ("enhanced", "enhanced_brain", "brain_mask", "dseg", "probsegs", "qi",
               "age_group", "model_file", "qc")


@dataclass(frozen=True)
class ImageJob:
    """One image to process and what is known about it before the workflow runs.

    Attributes
    ----------
    path : Path
        The input image.
    contrast : str
        ``T1w`` or ``T2w``.
    age : AgeInfo
        Age at scan and its source.
    subject, session : str or None
        BIDS labels (``None`` outside a dataset).
    mask : Path or None
        A precomputed brain mask for this image.
    model : ResolvedModel or None
        The enhancement model chosen when the run was planned (None: resolved at build time).
    """

    path: Path
    contrast: str
    age: AgeInfo
    subject: str | None = None
    session: str | None = None
    mask: Path | None = None
    model: ResolvedModel | None = None

    @property
    def name(self) -> str:
        """Identifier usable as a Nipype workflow name, unique per input file."""
        stem = re.sub(r"\.nii(\.gz)?$", "", Path(self.path).name)
        return re.sub(r"\W", "_", stem)

    @property
    def group(self) -> str:
        """Age group of the model that serves this image."""
        return age_group(self.age.workflow_months)

    def metadata(self) -> dict:
        """Age entries of the sidecars."""
        return {"AgeMonths": round(self.age.months, 2), "AgeSource": self.age.source,
                "Fetal": self.age.fetal, "AgeGroup": self.group}


def init_image_wf(*, job: ImageJob, output_dir: Path, bids_dir: Path | None = None,
                  models_dir: Path | None = None, mask_source: str = "auto",
                  use_gpu: bool = False, omp_nthreads: int = 1, tiling: str = "fast",
                  precision: str = "auto", reports: bool = True,
                  output_spaces: Sequence[OutputSpace] = (), volumes: bool = True,
                  registration: dict | None = None, name: str | None = None) -> Workflow:
    """``init_bmex_wf`` for one image, its outputs sunk to ``output_dir`` (+ reportlets).

    ``output_spaces`` adds one ``init_registration_wf`` (and a sink) per space that applies
    to the image (:func:`bmex_wf.spaces.templateflow.resolve_space`); ``registration`` holds
    its keyword arguments (``transform``, ``iterations``, ``spacing_mm``, ``seed``).
    ``volumes`` adds the tissue-volume table (``desc-volumes_morph.tsv``).
    """
    from .base import init_bmex_model_wf

    workflow = Workflow(name=name or f"{job.name}_wf")
    model = job.model or resolve_enhance_model(job.group, job.contrast, models_dir)
    bmex_wf = init_bmex_model_wf(
        model=model, age_months=job.age.workflow_months, contrast=job.contrast,
        models_dir=str(models_dir) if models_dir else None,
        mask_source="precomputed" if job.mask else mask_source, use_gpu=use_gpu,
        omp_nthreads=omp_nthreads, tiling=tiling, precision=precision,
        age_source=job.age.source, name="bmex_wf")
    bmex_wf.inputs.inputnode.in_file = str(job.path)
    if job.mask:
        bmex_wf.inputs.inputnode.in_mask = str(job.mask)
    sink = pe.Node(BMEXDerivativesSink(output_dir=str(output_dir), source_file=str(job.path),
                                       contrast=job.contrast, metadata=job.metadata()),
                   name="ds_outputs", run_without_submitting=True)
    if bids_dir is not None:
        sink.inputs.bids_dir = str(bids_dir)
    workflow.connect([(bmex_wf, sink, [(f"outputnode.{f}", f) for f in SINK_FIELDS])])
    if reports:
        _add_reports(workflow, bmex_wf, job, output_dir)
    if volumes:
        _add_volumes(workflow, bmex_wf, job, output_dir, bids_dir)
    for space in output_spaces:
        resolved = resolve_space(space, job.age.months, fetal=job.age.fetal,
                                 source=Path(job.path).name)
        if resolved is not None:
            _add_space(workflow, bmex_wf, job, resolved, output_dir, bids_dir,
                       omp_nthreads=omp_nthreads, reports=reports, **(registration or {}))
    return workflow


def _add_volumes(workflow, bmex_wf, job: ImageJob, output_dir: Path,
                 bids_dir: Path | None) -> None:
    """Tissue volumes of the network dseg and of Atropos (original, enhanced) into a TSV."""
    from ..interfaces.tissue import TissueVolumes

    volumes = pe.Node(TissueVolumes(contrast=job.contrast, age_group=job.group,
                                    original_brain=str(job.path)),
                      name="tissue_volumes", mem_gb=2)
    sink = pe.Node(BMEXVolumesSink(output_dir=str(output_dir), source_file=str(job.path),
                                   contrast=job.contrast),
                   name="ds_volumes", run_without_submitting=True)
    if bids_dir is not None:
        sink.inputs.bids_dir = str(bids_dir)
    workflow.connect([
        (bmex_wf, volumes, [("outputnode.dseg", "dseg"),
                            ("outputnode.enhanced_brain", "enhanced_brain"),
                            ("outputnode.brain_mask", "brain_mask")]),
        (volumes, sink, [("out_tsv", "in_tsv")]),
    ])


def _add_space(workflow, bmex_wf, job: ImageJob, space: OutputSpace, output_dir: Path,
               bids_dir: Path | None, *, omp_nthreads: int, reports: bool, **settings) -> None:
    """Registration to ``space``, its outputs sunk, its reportlet into the figures."""
    from .registration import init_registration_wf

    reg_wf = init_registration_wf(space=space, contrast=job.contrast,
                                  omp_nthreads=omp_nthreads, **settings)
    sink = pe.Node(BMEXSpaceSink(output_dir=str(output_dir), source_file=str(job.path),
                                 contrast=job.contrast, space=str(space),
                                 metadata=job.metadata()),
                   name=f"ds_{reg_wf.name}", run_without_submitting=True)
    if bids_dir is not None:
        sink.inputs.bids_dir = str(bids_dir)
    workflow.connect([
        (bmex_wf, reg_wf, [(f"outputnode.{f}", f"inputnode.{f}")
                           for f in ("enhanced", "enhanced_brain", "brain_mask", "dseg")]),
        (reg_wf, sink, [("outputnode.enhanced", "enhanced"), ("outputnode.dseg", "dseg"),
                        ("outputnode.forward_xfm", "xfm_forward"),
                        ("outputnode.inverse_xfm", "xfm_inverse")]),
    ])
    if reports:
        from ..interfaces.figures_sink import FiguresSink

        entities = {"space": space.name, "desc": "registration"}
        if space.cohort is not None:
            entities["cohort"] = space.cohort
        figure = pe.Node(FiguresSink(output_dir=str(output_dir), source_file=str(job.path),
                                     datatype="figures", dismiss_entities=("echo",),
                                     **entities),
                         name=f"ds_report_{reg_wf.name}", run_without_submitting=True)
        workflow.connect([(reg_wf, figure, [("outputnode.out_report", "in_file")])])


def _add_reports(workflow, bmex_wf, job: ImageJob, output_dir: Path) -> None:
    """Visual QC reportlets of the image into ``sub-<label>/figures``."""
    from .reports import init_report_wf

    report_wf = init_report_wf(output_dir=str(output_dir), contrast=job.contrast)
    report_wf.inputs.inputnode.source_file = str(job.path)
    report_wf.inputs.inputnode.in_file = str(job.path)
    workflow.connect([(bmex_wf, report_wf, [
        (f"outputnode.{f}", f"inputnode.{f}")
        for f in ("enhanced", "brain_mask", "dseg", "qc", "age_group")])])


def init_participant_wf(*, subject: str, jobs: list[ImageJob], output_dir: Path,
                        bids_dir: Path | None = None, models_dir: Path | None = None,
                        mask_source: str = "auto", use_gpu: bool = False,
                        omp_nthreads: int = 1, tiling: str = "fast", precision: str = "auto",
                        reports: bool = True, output_spaces: Sequence[OutputSpace] = (),
                        volumes: bool = True, registration: dict | None = None,
                        name: str | None = None) -> Workflow:
    """Workflow of one participant: every image of ``jobs`` enhanced and sunk.

    Parameters
    ----------
    subject : str
        Subject label (names the workflow).
    jobs : list of ImageJob
        The subject's images.
    output_dir : Path
        Root of the derivatives dataset.
    bids_dir : Path, optional
        Root of the input dataset (outputs mirror its layout).
    models_dir, mask_source, use_gpu, omp_nthreads, tiling, precision
        Passed to ``init_bmex_wf``.
    reports : bool
        Add the visual QC reportlets of each image.
    output_spaces : sequence of OutputSpace
        Standard spaces each image is registered to (fetal images and ages beyond a
        template's cohorts skip a space, with a log message).
    volumes : bool
        Write each image's tissue-volume table.
    registration : dict, optional
        Settings of ``init_registration_wf`` (``transform``, ``iterations``, ...).

    Returns
    -------
    LiterateWorkflow
        One sub-workflow per image, named after the image, no inputs or outputs.
    """
    label = re.sub(r"\W", "_", subject)
    workflow = Workflow(name=name or f"sub_{label}_wf")
    for job in jobs:
        workflow.add_nodes([init_image_wf(
            job=job, output_dir=output_dir, bids_dir=bids_dir, models_dir=models_dir,
            mask_source=mask_source, use_gpu=use_gpu, omp_nthreads=omp_nthreads,
            tiling=tiling, precision=precision, reports=reports,
            output_spaces=output_spaces, volumes=volumes, registration=registration)])
    return workflow
