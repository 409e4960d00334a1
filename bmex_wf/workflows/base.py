"""``init_bmex_wf``: BME-X enhancement of one T1w or T2w image."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow
from niworkflows.interfaces.nibabel import ApplyMask, SplitSeries

from ..age import age_group as group_of
from ..interfaces.brainmask import BrainMask
from ..interfaces.enhance import Enhance
from ..interfaces.geometry import (
    ReorientLPS,
    ResampleToReference,
    ResampleToSpacing,
    RestoreOrientation,
    ValidateImage,
)
from ..interfaces.intensity import (
    HistogramMatch,
    N4BiasCorrection,
    QualityIndex,
    SkullAddBack,
    TissueSegmentation,
    WindowIntensities,
)
from ..interfaces.qc import WriteQC
from ..labels import MASK_SOURCES
from ..models.registry import resolve_enhance_model

#: Outputs of ``init_bmex_wf`` that are images on the input's original grid.
IMAGE_OUTPUTS = ("enhanced", "enhanced_brain", "brain_mask", "dseg")



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
    name: str = "bmex_wf",
) -> Workflow:
    """Enhance one structural image with BME-X and segment its tissues.

    The image is validated, reoriented to its closest LPS axes (exactly, no
    interpolation), windowed to 0..1000 and N4-corrected; a brain mask is
    computed; the masked brain is N4-corrected again, resampled to 0.8 mm
    (0.75 mm fetal), histogram-matched to the age template and enhanced by
    network E. Every output is brought back onto the input's original grid.

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
    """
    if mask_source not in MASK_SOURCES:
        raise ValueError(f"unknown brain-mask source {mask_source!r}; expected one of {MASK_SOURCES}")
    group = group_of(age_months)
    model = resolve_enhance_model(group, contrast, models_dir)

    workflow = Workflow(name=name)
    workflow.__desc__ = _description(group, contrast, model.builtin, mask_source,
                                     bias_correction)
    inputnode = pe.Node(niu.IdentityInterface(fields=["in_file", "in_mask"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=[
        *IMAGE_OUTPUTS, "probsegs", "qi", "age_group", "model_file", "qc", "landmarks"]),
        name="outputnode")
    outputnode.inputs.age_group = group
    outputnode.inputs.model_file = str(model.path)

    validate = pe.Node(ValidateImage(), name="validate")
    reorient = pe.Node(ReorientLPS(), name="reorient")
    window = pe.Node(WindowIntensities(), name="window")
    brainmask = pe.Node(BrainMask(source=mask_source, num_threads=omp_nthreads, use_gpu=use_gpu),
                        name="brainmask", n_procs=omp_nthreads)
    if models_dir:
        brainmask.inputs.models_dir = models_dir
    # data * (mask > 0.5): recipe.apply_mask's result for BrainMask's binary masks
    mask_head = pe.Node(ApplyMask(), name="mask_head")
    to_grid = pe.Node(ResampleToSpacing(spacing=model.entry.voxel_mm, order=1), name="to_grid")
    mask_to_grid = pe.Node(ResampleToSpacing(spacing=model.entry.voxel_mm, order=0),
                           name="mask_to_grid")
    match = pe.Node(HistogramMatch(template=model.entry.template), name="match_template")
    enhance = pe.Node(Enhance(model_file=str(model.path), tiling=tiling, precision=precision,
                              use_gpu=use_gpu, num_threads=omp_nthreads),
                      name="enhance", n_procs=omp_nthreads, mem_gb=4)

    recon_back = pe.Node(ResampleToReference(order=1), name="recon_back")
    split_scores = pe.Node(SplitSeries(), name="split_scores")
    scores_back = pe.MapNode(ResampleToReference(order=1), iterfield=["in_file"],
                             name="scores_back")
    tissues = pe.Node(TissueSegmentation(), name="tissues")
    brain_only = pe.Node(ApplyMask(), name="brain_only")
    skull = pe.Node(SkullAddBack(), name="skull_add_back")
    match_original = pe.Node(HistogramMatch(template=model.entry.template),
                             name="match_original")
    quality = pe.Node(QualityIndex(), name="quality")

    restore = {
        field: pe.Node(RestoreOrientation(out_dtype=dtype), name=f"restore_{field}")
        for field, dtype in zip(IMAGE_OUTPUTS, ("keep", "float32", "uint8", "uint8"))
    }
    restore_probs = pe.MapNode(RestoreOrientation(out_dtype="float32"), iterfield=["in_file"],
                               name="restore_probsegs")
    qc = pe.Node(WriteQC(model_file=str(model.path), builtin=model.builtin,
                         template=model.entry.template, contrast=contrast,
                         age_months=float(age_months), age_source=age_source, age_group=group,
                         tiling=tiling), name="write_qc")

    workflow.connect([
        (inputnode, validate, [("in_file", "in_file")]),
        (inputnode, brainmask, [("in_mask", "in_mask")]),
        (validate, reorient, [("out_file", "in_file")]),
        (reorient, window, [("out_file", "in_file")]),
        (brainmask, mask_head, [("out_mask", "in_mask")]),
        (brainmask, mask_to_grid, [("out_mask", "in_file")]),
        (to_grid, match, [("out_file", "in_file")]),
        (match, enhance, [("out_file", "in_file")]),
        (mask_to_grid, enhance, [("out_file", "in_mask")]),
        # back onto the (LPS-reoriented) input grid
        (enhance, recon_back, [("out_file", "in_file")]),
        (reorient, recon_back, [("out_file", "reference_file")]),
        (enhance, split_scores, [("out_scores", "in_file")]),
        (split_scores, scores_back, [("out_files", "in_file")]),
        (reorient, scores_back, [("out_file", "reference_file")]),
        (scores_back, tissues, [("out_file", "in_score_files")]),
        (recon_back, brain_only, [("out_file", "in_file")]),
        (brainmask, brain_only, [("out_mask", "in_mask")]),
        (brain_only, skull, [("out_file", "in_enhanced")]),
        (reorient, skull, [("out_file", "in_original")]),
        (brainmask, skull, [("out_mask", "in_mask")]),
        (window, match_original, [("out_file", "in_file")]),
        (match_original, quality, [("out_file", "in_original")]),
        (brain_only, quality, [("out_file", "in_enhanced")]),
        (tissues, quality, [("out_dseg", "in_dseg")]),
        # back onto the original array order and header
        (skull, restore["enhanced"], [("out_file", "in_file")]),
        (brain_only, restore["enhanced_brain"], [("out_file", "in_file")]),
        (brainmask, restore["brain_mask"], [("out_mask", "in_file")]),
        (tissues, restore["dseg"], [("out_dseg", "in_file")]),
        (tissues, restore_probs, [("out_probseg", "in_file")]),
        (validate, restore_probs, [("out_file", "reference_file")]),
        (validate, qc, [("out_file", "in_file")]),
        (brainmask, qc, [("source_used", "mask_source")]),
        (quality, qc, [("qi", "qi"), ("tct_before", "tct_before"), ("tct_after", "tct_after")]),
        (enhance, qc, [("device", "device"), ("precision", "precision"),
                       ("seconds", "enhance_seconds")]),
        (quality, outputnode, [("qi", "qi")]),
        (restore_probs, outputnode, [("out_file", "probsegs")]),
        (qc, outputnode, [("out_file", "qc")]),
        (match, outputnode, [("out_landmarks", "landmarks")]),
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
    for field, node in restore.items():
        workflow.connect([
            (validate, node, [("out_file", "reference_file")]),
            (node, outputnode, [("out_file", field)]),
        ])
    return workflow


def _description(group: str, contrast: str, builtin: bool, mask_source: str,
                 bias_correction: bool) -> str:
    """Methods boilerplate of one enhancement."""
    n4_head = (", and its intensity non-uniformity was corrected with N4 [@n4]"
               if bias_correction else "")
    n4_brain = " corrected with N4 again," if bias_correction else ""
    model = ("the compact built-in model of *bmex-wf* (a network of the BME-X family trained by "
             "the *bmex-wf* project, not the published BME-X weights)" if builtin
             else f"the published BME-X weights for the {group} {contrast} group")
    mask = {
        "lifespanstrip": "LifespanStrip [@lifespanstrip]",
        "precomputed": "a precomputed brain mask",
        "nonzero": "the non-zero voxels of the already skull-stripped input",
        "template": "a registered brain-mask template (MNI152)",
        "auto": "the best available source (LifespanStrip [@lifespanstrip], the non-zero "
                "voxels of a skull-stripped input, or a registered MNI152 brain mask)",
    }[mask_source]
    return f"""\
The {contrast} image was enhanced with BME-X [@bmex], a 3D dense U-Net that corrects motion,
raises resolution, removes noise and harmonizes structural MRI, using {model}.
The image was reoriented to its closest LPS axes without interpolation, its intensities were
windowed (0.001st-99.999th percentiles mapped to 0-1000){n4_head}. A brain mask was obtained
from {mask}. The masked brain was{n4_brain} resampled to {"0.75" if group == "Fetal" else "0.8"} mm isotropic voxels and
histogram-matched to the {group} {contrast} intensity template of BME-X. Network inference
produced the enhanced brain and four tissue-class maps (background, CSF, grey matter, white
matter); these were resampled back onto the original grid, tissue labels being the most
probable class. Voxels outside the brain mask were kept from the original image. The
quality index (QI) is the ratio of the grey/white-matter tissue contrast of the original
image to that of the enhanced image.
"""
