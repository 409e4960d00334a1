"""Participant-level workflow: one ``init_bmex_wf`` per image, each followed by a sink."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ..age import AgeInfo, age_group
from ..interfaces.bids import BMEXDerivativesSink, BMEXSpaceSink, BMEXVolumesSink
from ..models.registry import ResolvedModel, resolve_enhance_model
from ..resolution import image_zooms, resolution_description, resolve_output_resolution
from ..spaces.templateflow import OutputSpace, resolve_space
from .network_grid import NETWORK_GRID_FIELDS

LOGGER = logging.getLogger("bmex_wf.workflows")

#: Outputnode fields of ``init_bmex_wf`` written by the sink (same names on both sides; the
#: network-grid sink reads ``<field>_network`` for the images).
SINK_FIELDS = ("enhanced", "enhanced_brain", "brain_mask", "dseg", "probsegs", "qi",
               "age_group", "model_file", "qc")
#: Images registered to the ``--output-spaces`` templates.
REGISTERED_FIELDS = ("enhanced", "enhanced_brain", "brain_mask", "dseg")


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
                  registration: dict | None = None, output_resolution: str = "auto",
                  name: str | None = None) -> Workflow:
    """``init_bmex_wf`` for one image, its outputs sunk to ``output_dir`` (+ reportlets).

    ``output_spaces`` adds one ``init_registration_wf`` (and a sink) per space that applies
    to the image (:func:`bmex_wf.spaces.templateflow.resolve_space`); ``registration`` holds
    its keyword arguments (``transform``, ``iterations``, ``spacing_mm``, ``seed``).
    ``volumes`` adds the tissue-volume table (``desc-volumes_morph.tsv``).
    ``output_resolution`` (:func:`bmex_wf.resolution.resolve_output_resolution`, decided
    here from the image header's voxel sizes) adds the ``res-`` outputs on the network grid,
    which the registrations then start from.
    """
    from .base import init_bmex_model_wf

    workflow = Workflow(name=name or f"{job.name}_wf")
    model = job.model or resolve_enhance_model(job.group, job.contrast, models_dir)
    zooms = image_zooms(job.path)
    resolution = resolve_output_resolution(output_resolution, zooms)
    LOGGER.info("%s: voxels %s mm, outputs on the %s", Path(job.path).name,
                "x".join(f"{z:.3g}" for z in zooms),
                "input grid" if resolution == "native"
                else f"input grid and the {model.entry.voxel_mm:g} mm network grid")
    bmex_wf = init_bmex_model_wf(
        model=model, age_months=job.age.workflow_months, contrast=job.contrast,
        models_dir=str(models_dir) if models_dir else None,
        mask_source="precomputed" if job.mask else mask_source, use_gpu=use_gpu,
        omp_nthreads=omp_nthreads, tiling=tiling, precision=precision,
        age_source=job.age.source, output_resolution=resolution, name="bmex_wf")
    bmex_wf.inputs.inputnode.in_file = str(job.path)
    if job.mask:
        bmex_wf.inputs.inputnode.in_mask = str(job.mask)
    grid_mm = model.entry.voxel_mm if resolution == "network" else None
    _add_sink(workflow, bmex_wf, job, output_dir, bids_dir)
    if grid_mm is not None:
        _add_sink(workflow, bmex_wf, job, output_dir, bids_dir, voxel_mm=grid_mm)
    if reports:
        _add_reports(workflow, bmex_wf, job, output_dir, grid_mm)
    if volumes:
        _add_volumes(workflow, bmex_wf, job, output_dir, bids_dir)
    for space in output_spaces:
        resolved = resolve_space(space, job.age.months, fetal=job.age.fetal,
                                 source=Path(job.path).name)
        if resolved is not None:
            _add_space(workflow, bmex_wf, job, resolved, output_dir, bids_dir,
                       omp_nthreads=omp_nthreads, reports=reports, grid_mm=grid_mm,
                       **(registration or {}))
    return workflow


def _grid_field(field: str, voxel_mm: float | None) -> str:
    """Outputnode field of ``init_bmex_wf`` holding ``field`` (on the network grid with
    ``voxel_mm``)."""
    return f"{field}_network" if voxel_mm is not None and field in NETWORK_GRID_FIELDS else field


def _add_sink(workflow, bmex_wf, job: ImageJob, output_dir: Path, bids_dir: Path | None,
              voxel_mm: float | None = None) -> None:
    """The image's outputs into the derivatives tree (network-grid ones with ``voxel_mm``)."""
    sink = pe.Node(BMEXDerivativesSink(output_dir=str(output_dir), source_file=str(job.path),
                                       contrast=job.contrast, metadata=job.metadata()),
                   name="ds_outputs" if voxel_mm is None else "ds_network_grid",
                   run_without_submitting=True)
    if bids_dir is not None:
        sink.inputs.bids_dir = str(bids_dir)
    if voxel_mm is not None:
        sink.inputs.voxel_mm = voxel_mm
    workflow.connect([(bmex_wf, sink, [(f"outputnode.{_grid_field(f, voxel_mm)}", f)
                                       for f in SINK_FIELDS])])


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
               bids_dir: Path | None, *, omp_nthreads: int, reports: bool,
               grid_mm: float | None = None, **settings) -> None:
    """Registration to ``space`` (from the network-grid images when ``grid_mm`` is given),
    its outputs sunk, its reportlet into the figures."""
    from .registration import init_registration_wf

    reg_wf = init_registration_wf(space=space, contrast=job.contrast,
                                  omp_nthreads=omp_nthreads, **settings)
    grid = ("the input's grid" if grid_mm is None
            else f"the network grid ({resolution_description(grid_mm)})")
    sink = pe.Node(BMEXSpaceSink(output_dir=str(output_dir), source_file=str(job.path),
                                 contrast=job.contrast, space=str(space),
                                 metadata={**job.metadata(), "RegisteredFrom": grid}),
                   name=f"ds_{reg_wf.name}", run_without_submitting=True)
    if bids_dir is not None:
        sink.inputs.bids_dir = str(bids_dir)
    workflow.connect([
        (bmex_wf, reg_wf, [(f"outputnode.{_grid_field(f, grid_mm)}", f"inputnode.{f}")
                           for f in REGISTERED_FIELDS]),
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


def _add_reports(workflow, bmex_wf, job: ImageJob, output_dir: Path,
                 grid_mm: float | None = None) -> None:
    """Visual QC reportlets of the image into ``sub-<label>/figures`` (with ``grid_mm``, the
    super-resolution one too)."""
    from .reports import init_report_wf

    report_wf = init_report_wf(output_dir=str(output_dir), contrast=job.contrast,
                               superresolution=grid_mm is not None)
    report_wf.inputs.inputnode.source_file = str(job.path)
    report_wf.inputs.inputnode.in_file = str(job.path)
    workflow.connect([(bmex_wf, report_wf, [
        (f"outputnode.{f}", f"inputnode.{f}")
        for f in ("enhanced", "brain_mask", "dseg", "qc", "age_group")])])
    if grid_mm is not None:
        workflow.connect([(bmex_wf, report_wf, [("outputnode.enhanced_network",
                                                 "inputnode.enhanced_network")])])


def init_participant_wf(*, subject: str, jobs: list[ImageJob], output_dir: Path,
                        bids_dir: Path | None = None, models_dir: Path | None = None,
                        mask_source: str = "auto", use_gpu: bool = False,
                        omp_nthreads: int = 1, tiling: str = "fast", precision: str = "auto",
                        reports: bool = True, output_spaces: Sequence[OutputSpace] = (),
                        volumes: bool = True, registration: dict | None = None,
                        output_resolution: str = "auto", name: str | None = None) -> Workflow:
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
    output_resolution : str
        ``auto``, ``native`` or ``network``: which images also get network-grid outputs.

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
            output_spaces=output_spaces, volumes=volumes, registration=registration,
            output_resolution=output_resolution)])
    return workflow
