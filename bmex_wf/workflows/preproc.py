"""Preprocessing sub-workflow: from the input image to the network's input (spec 8.3/8.4)."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow
from niworkflows.interfaces.nibabel import ApplyMask

from ..interfaces.brainmask import BrainMask
from ..interfaces.geometry import ReorientLPS, ResampleToSpacing, ValidateImage
from ..interfaces.preproc import HistogramMatch, N4BiasCorrection, WindowIntensities

#: Outputs of the preprocessing sub-workflow.
PREPROC_OUTPUTS = ("validated", "reoriented", "windowed", "brain_mask", "mask_source",
                   "network_input", "grid_mask", "landmarks")


def init_bmex_preproc_wf(*, template: str, voxel_mm: float, mask_source: str = "auto",
                         models_dir: str | None = None, use_gpu: bool = False,
                         omp_nthreads: int = 1, bias_correction: bool = True,
                         name: str = "preproc_wf") -> Workflow:
    """Validate, reorient, window, bias-correct, mask, resample and match one image.

    The nodes run the steps of :mod:`bmex_wf.preproc.recipe` in its order: the network's
    input is what training feeds it too.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from bmex_wf.workflows.preproc import init_bmex_preproc_wf
            wf = init_bmex_preproc_wf(template="Template-Month24-T1w", voxel_mm=0.8)

    Parameters
    ----------
    template : str
        Age template of the histogram matching, e.g. ``Template-Month24-T1w``.
    voxel_mm : float
        Network voxel size of the model (0.8 mm; 0.75 mm fetal).
    mask_source, models_dir, use_gpu, omp_nthreads, bias_correction
        As for :func:`bmex_wf.workflows.base.init_bmex_wf`.

    Inputs
    ------
    in_file, in_mask
        The image and an optional precomputed brain mask.

    Outputs
    -------
    validated, reoriented, windowed
        The checked input, its LPS reorientation, its windowed intensities.
    brain_mask, mask_source
        Brain mask on the LPS grid of the input, and the source that made it.
    network_input, grid_mask
        Network input (template units) and brain mask on the network grid.
    landmarks
        JSON record of the histogram landmarks.
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = _description(template, voxel_mm, mask_source, bias_correction)
    inputnode = pe.Node(niu.IdentityInterface(fields=["in_file", "in_mask"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=list(PREPROC_OUTPUTS)), name="outputnode")

    validate = pe.Node(ValidateImage(), name="validate")
    reorient = pe.Node(ReorientLPS(), name="reorient")
    window = pe.Node(WindowIntensities(), name="window")
    brainmask = pe.Node(BrainMask(source=mask_source, num_threads=omp_nthreads, use_gpu=use_gpu),
                        name="brainmask", n_procs=omp_nthreads)
    if models_dir:
        brainmask.inputs.models_dir = models_dir
    # data * (mask > 0.5): recipe.apply_mask's result for BrainMask's binary masks
    mask_head = pe.Node(ApplyMask(), name="mask_head")
    to_grid = pe.Node(ResampleToSpacing(spacing=voxel_mm, order=1), name="to_grid")
    mask_to_grid = pe.Node(ResampleToSpacing(spacing=voxel_mm, order=0), name="mask_to_grid")
    match = pe.Node(HistogramMatch(template=template), name="match_template")

    workflow.connect([
        (inputnode, validate, [("in_file", "in_file")]),
        (inputnode, brainmask, [("in_mask", "in_mask")]),
        (validate, reorient, [("out_file", "in_file")]),
        (reorient, window, [("out_file", "in_file")]),
        (brainmask, mask_head, [("out_mask", "in_mask")]),
        (brainmask, mask_to_grid, [("out_mask", "in_file")]),
        (to_grid, match, [("out_file", "in_file")]),
        (validate, outputnode, [("out_file", "validated")]),
        (reorient, outputnode, [("out_file", "reoriented")]),
        (window, outputnode, [("out_file", "windowed")]),
        (brainmask, outputnode, [("out_mask", "brain_mask"), ("source_used", "mask_source")]),
        (match, outputnode, [("out_file", "network_input"), ("out_landmarks", "landmarks")]),
        (mask_to_grid, outputnode, [("out_file", "grid_mask")]),
    ])
    head, brain = window, mask_head
    if bias_correction:
        n4_head = pe.Node(N4BiasCorrection(num_threads=omp_nthreads), name="n4_head",
                          n_procs=omp_nthreads)
        n4_brain = pe.Node(N4BiasCorrection(num_threads=omp_nthreads), name="n4_brain",
                           n_procs=omp_nthreads)
        workflow.connect([
            (window, n4_head, [("out_file", "in_file")]),
            (mask_head, n4_brain, [("out_file", "in_file")]),
            (brainmask, n4_brain, [("out_mask", "in_mask")]),
        ])
        head, brain = n4_head, n4_brain
    workflow.connect([
        (head, brainmask, [("out_file", "in_file")]),
        (head, mask_head, [("out_file", "in_file")]),
        (brain, to_grid, [("out_file", "in_file")]),
    ])
    return workflow


def _description(template: str, voxel_mm: float, mask_source: str, bias_correction: bool) -> str:
    """Methods boilerplate of the preprocessing."""
    n4_head = (", and its intensity non-uniformity was corrected with N4 [@n4]"
               if bias_correction else "")
    n4_brain = " corrected with N4 again," if bias_correction else ""
    mask = {
        "lifespanstrip": "LifespanStrip [@lifespanstrip]",
        "precomputed": "a precomputed brain mask",
        "nonzero": "the non-zero voxels of the already skull-stripped input",
        "template": "a registered brain-mask template (MNI152)",
        "auto": "the best available source (LifespanStrip [@lifespanstrip], the non-zero "
                "voxels of a skull-stripped input, or a registered MNI152 brain mask)",
    }[mask_source]
    group, contrast = template.removeprefix("Template-").split("-")
    return f"""\
The image was reoriented to its closest LPS axes without interpolation, its intensities were
windowed (0.001st-99.999th percentiles mapped to 0-1000){n4_head}. A brain mask was obtained
from {mask}. The masked brain was{n4_brain} resampled to {voxel_mm:g} mm isotropic voxels and
histogram-matched to the {group} {contrast} intensity template of BME-X.
"""
