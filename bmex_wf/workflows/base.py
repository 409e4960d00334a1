"""``init_bmex_wf``: BME-X enhancement of one T1w or T2w image, from its sub-workflows."""

from __future__ import annotations

from collections.abc import Sequence

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ..age import age_group as group_of
from ..interfaces.qc import WriteQC
from ..labels import MASK_SOURCES
from ..models.registry import ResolvedModel, resolve_enhance_model
from ..resolution import resolve_output_resolution
from .enhance import init_bmex_enhance_wf
from .network_grid import NETWORK_GRID_FIELDS, NETWORK_GRID_OUTPUTS, init_network_grid_wf
from .postproc import IMAGE_OUTPUTS, init_bmex_postproc_wf
from .preproc import init_bmex_preproc_wf

__all__ = ["IMAGE_OUTPUTS", "NETWORK_GRID_OUTPUTS", "init_bmex_model_wf", "init_bmex_wf"]

#: Outputnode fields of ``init_bmex_wf`` (the network-grid ones are set with ``network``).
OUTPUTS = (*IMAGE_OUTPUTS, "probsegs", "qi", "age_group", "model_file", "qc", "landmarks",
           *NETWORK_GRID_OUTPUTS)


def init_bmex_wf(
    *,
    age_months: float,
    contrast: str,
    models_dir: str | None = None,
    mask_source: str = "auto",
    use_gpu: bool = False,
    omp_nthreads: int = 1,
    tiling: str = "fast",
    precision: str = "auto",
    bias_correction: bool = True,
    age_source: str = "given",
    output_resolution: str = "native",
    input_zooms: Sequence[float] | None = None,
    name: str = "bmex_wf",
) -> Workflow:
    """Enhance one structural image with BME-X and segment its tissues.

    The image is validated, reoriented to its closest LPS axes (exactly, no
    interpolation), windowed to 0..1000 and N4-corrected; a brain mask is
    computed; the masked brain is N4-corrected again, resampled to 0.8 mm
    (0.75 mm fetal), histogram-matched to the age template and enhanced by
    network E. Every output is brought back onto the input's original grid; with
    ``output_resolution`` ``network`` they are also given on the network grid.

    Parameters
    ----------
    age_months : float
        Age at scan in months (negative: in utero); picks model and template.
    contrast : str
        ``T1w`` or ``T2w``.
    models_dir : str, optional
        Directory searched first for model files.
    mask_source : str
        ``auto``, ``lifespanstrip``, ``precomputed``, ``nonzero`` or ``template``.
    use_gpu : bool
        Run the networks on a CUDA device.
    omp_nthreads : int
        CPU threads per node.
    tiling, precision : str
        Inference settings of the enhancement network.
    bias_correction : bool
        N4 bias-field correction of the head and of the masked brain (on, as in BME-X).
    age_source : str
        Where the age came from (recorded in the QC record).
    output_resolution : str
        ``native`` (input grid only), ``network`` (also the network grid) or ``auto``
        (``network`` when an axis of ``input_zooms`` is coarser than 1.01 mm; with
        ``input_zooms`` unknown, ``network``).
    input_zooms : sequence of float, optional
        Voxel sizes (mm) of the input, for ``auto``.
    name : str
        Workflow name.

    Inputs
    ------
    in_file
        The T1w or T2w image.
    in_mask
        Optional precomputed brain mask (any grid), used by the ``precomputed`` source.

    Outputs
    -------
    enhanced, enhanced_brain, brain_mask, dseg
        Images on the input grid: whole-head enhanced image, enhanced brain,
        brain mask, tissue labels (0 BG, 1 CSF, 2 GM, 3 WM).
    probsegs
        CSF, GM and WM probability maps on the input grid.
    qi
        Quality index TCT(original) / TCT(enhanced).
    age_group, model_file
        Age group and the checkpoint used.
    qc
        JSON record of QI, TCT, age, model (+ sha256), mask source, settings,
        timings and software versions.
    landmarks
        JSON of the histogram landmarks used when matching to the age template.
    enhanced_network, enhanced_brain_network, brain_mask_network, dseg_network, probsegs_network
        With ``network``: the same images on the network grid (0.8 mm isotropic, 0.75 mm
        fetal) in the input's axis order and orientation, over its field of view.
    """
    group = group_of(age_months)
    return init_bmex_model_wf(
        model=resolve_enhance_model(group, contrast, models_dir), age_months=age_months,
        contrast=contrast, models_dir=models_dir, mask_source=mask_source, use_gpu=use_gpu,
        omp_nthreads=omp_nthreads, tiling=tiling, precision=precision,
        bias_correction=bias_correction, age_source=age_source,
        output_resolution=output_resolution, input_zooms=input_zooms, name=name)


def init_bmex_model_wf(*, model: ResolvedModel, age_months: float, contrast: str,
                       models_dir: str | None = None, mask_source: str = "auto",
                       use_gpu: bool = False, omp_nthreads: int = 1, tiling: str = "fast",
                       precision: str = "auto", bias_correction: bool = True,
                       age_source: str = "given", output_resolution: str = "native",
                       input_zooms: Sequence[float] | None = None,
                       name: str = "bmex_wf") -> Workflow:
    """:func:`init_bmex_wf` for an already resolved model entry (searches no disk).

    ``models_dir`` is only handed to the LifespanStrip mask source. The workflow is the
    preprocessing, enhancement and postprocessing sub-workflows, the QC record, and (when
    ``output_resolution`` resolves to ``network``) the network-grid sub-workflow.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from bmex_wf.models.registry import resolve_enhance_model
            from bmex_wf.workflows.base import init_bmex_model_wf
            wf = init_bmex_model_wf(model=resolve_enhance_model("Month24", "T1w"),
                                    age_months=24, contrast="T1w")
    """
    if mask_source not in MASK_SOURCES:
        raise ValueError(f"unknown brain-mask source {mask_source!r}; expected one of {MASK_SOURCES}")
    network_grid = resolve_output_resolution(output_resolution, input_zooms) == "network"
    group = group_of(age_months)
    entry = model.entry
    workflow = Workflow(name=name)
    workflow.__desc__ = f"""\
The {contrast} image was enhanced with BME-X [@bmex], a 3D dense U-Net that corrects motion,
raises resolution, removes noise and harmonizes structural MRI.
"""
    inputnode = pe.Node(niu.IdentityInterface(fields=["in_file", "in_mask"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=list(OUTPUTS)), name="outputnode")
    outputnode.inputs.age_group = group
    outputnode.inputs.model_file = str(model.path)

    preproc = init_bmex_preproc_wf(template=entry.template, voxel_mm=entry.voxel_mm,
                                   mask_source=mask_source, models_dir=models_dir,
                                   use_gpu=use_gpu, omp_nthreads=omp_nthreads,
                                   bias_correction=bias_correction)
    enhance = init_bmex_enhance_wf(model_file=str(model.path), builtin=model.builtin, group=group,
                                   contrast=contrast, tiling=tiling, precision=precision,
                                   use_gpu=use_gpu, omp_nthreads=omp_nthreads)
    postproc = init_bmex_postproc_wf(template=entry.template)
    qc = pe.Node(WriteQC(model_file=str(model.path), builtin=model.builtin,
                         template=entry.template, contrast=contrast,
                         age_months=float(age_months), age_source=age_source, age_group=group,
                         tiling=tiling), name="write_qc")
    workflow.connect([
        (inputnode, preproc, [("in_file", "inputnode.in_file"), ("in_mask", "inputnode.in_mask")]),
        (preproc, enhance, [("outputnode.network_input", "inputnode.in_file"),
                            ("outputnode.grid_mask", "inputnode.in_mask")]),
        (enhance, postproc, [("outputnode.recon", "inputnode.recon"),
                             ("outputnode.scores", "inputnode.scores")]),
        (preproc, postproc, [(f"outputnode.{f}", f"inputnode.{f}")
                             for f in ("validated", "reoriented", "windowed", "brain_mask")]),
        (preproc, qc, [("outputnode.validated", "in_file"), ("outputnode.mask_source", "mask_source")]),
        (postproc, qc, [("outputnode.qi", "qi"), ("outputnode.tct_before", "tct_before"),
                        ("outputnode.tct_after", "tct_after")]),
        (enhance, qc, [("outputnode.device", "device"), ("outputnode.precision", "precision"),
                       ("outputnode.seconds", "enhance_seconds"), ("outputnode.geometry", "geometry")]),
        (postproc, outputnode, [(f"outputnode.{f}", f)
                                for f in (*IMAGE_OUTPUTS, "probsegs", "qi")]),
        (preproc, outputnode, [("outputnode.landmarks", "landmarks")]),
        (qc, outputnode, [("out_file", "qc")]),
    ])
    if network_grid:
        grid_wf = init_network_grid_wf(voxel_mm=entry.voxel_mm)
        workflow.connect([
            (enhance, grid_wf, [("outputnode.recon", "inputnode.recon"),
                                ("outputnode.scores", "inputnode.scores")]),
            (preproc, grid_wf, [(f"outputnode.{f}", f"inputnode.{f}")
                                for f in ("grid_mask", "validated", "reoriented")]),
            (grid_wf, outputnode, [(f"outputnode.{f}", out)
                                   for f, out in zip(NETWORK_GRID_FIELDS, NETWORK_GRID_OUTPUTS)]),
        ])
    return workflow
