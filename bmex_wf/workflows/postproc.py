"""Postprocessing sub-workflow: network outputs back on the input grid, labels, skull, QI."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow
from niworkflows.interfaces.nibabel import ApplyMask

from ..interfaces.geometry import ResampleToReference, RestoreOrientation
from ..interfaces.postproc import QualityIndex, SkullAddBack, TissueSegmentation
from ..interfaces.preproc import HistogramMatch

#: Outputs of ``init_bmex_wf`` that are images on the input's original grid.
IMAGE_OUTPUTS = ("enhanced", "enhanced_brain", "brain_mask", "dseg")
#: On-disk data type of each image output ("keep": the enhanced head keeps the input's).
IMAGE_DTYPES = dict(zip(IMAGE_OUTPUTS, ("keep", "float32", "uint8", "uint8")))
#: Outputs of the postprocessing sub-workflow.
POSTPROC_OUTPUTS = (*IMAGE_OUTPUTS, "probsegs", "qi", "tct_before", "tct_after")


def init_bmex_postproc_wf(*, template: str, name: str = "postproc_wf") -> Workflow:
    """Bring the enhanced image and the class scores back onto the input's original grid.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from bmex_wf.workflows.postproc import init_bmex_postproc_wf
            wf = init_bmex_postproc_wf(template="Template-Month24-T1w")

    Parameters
    ----------
    template : str
        Age template the original is matched to for the quality index.

    Inputs
    ------
    recon, scores
        Enhanced intensities and the 4 class-score files on the network grid.
    validated, reoriented, windowed, brain_mask
        The input, its LPS reorientation, its windowed intensities, its brain mask (LPS grid).

    Outputs
    -------
    enhanced, enhanced_brain, brain_mask, dseg
        Images on the input's original grid and array order.
    probsegs
        CSF, GM and WM probability maps on that grid.
    qi, tct_before, tct_after
        Quality index TCT(original) / TCT(enhanced) and its two tissue contrasts.
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = """\
The enhanced image and the class maps were resampled back onto the original grid, tissue labels
being the most probable class. Voxels outside the brain mask were kept from the original image.
The quality index (QI) is the ratio of the grey/white-matter tissue contrast of the original
image to that of the enhanced image.
"""
    inputnode = pe.Node(niu.IdentityInterface(fields=[
        "recon", "scores", "validated", "reoriented", "windowed", "brain_mask"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=list(POSTPROC_OUTPUTS)), name="outputnode")

    recon_back = pe.Node(ResampleToReference(order=1), name="recon_back")
    scores_back = pe.MapNode(ResampleToReference(order=1), iterfield=["in_file"],
                             name="scores_back")
    tissues = pe.Node(TissueSegmentation(), name="tissues")
    brain_only = pe.Node(ApplyMask(), name="brain_only")
    skull = pe.Node(SkullAddBack(), name="skull_add_back")
    match_original = pe.Node(HistogramMatch(template=template), name="match_original")
    quality = pe.Node(QualityIndex(), name="quality")
    workflow.connect([
        (inputnode, recon_back, [("recon", "in_file"), ("reoriented", "reference_file")]),
        (inputnode, scores_back, [("scores", "in_file"), ("reoriented", "reference_file")]),
        (scores_back, tissues, [("out_file", "in_score_files")]),
        (recon_back, brain_only, [("out_file", "in_file")]),
        (inputnode, brain_only, [("brain_mask", "in_mask")]),
        (brain_only, skull, [("out_file", "in_enhanced")]),
        (inputnode, skull, [("reoriented", "in_original"), ("brain_mask", "in_mask")]),
        (inputnode, match_original, [("windowed", "in_file")]),
        (match_original, quality, [("out_file", "in_original")]),
        (brain_only, quality, [("out_file", "in_enhanced")]),
        (tissues, quality, [("out_dseg", "in_dseg")]),
        (quality, outputnode, [("qi", "qi"), ("tct_before", "tct_before"),
                               ("tct_after", "tct_after")]),
    ])
    add_restore_nodes(workflow, RestoreOrientation, "restore", inputnode, outputnode, {
        "enhanced": (skull, "out_file"), "enhanced_brain": (brain_only, "out_file"),
        "brain_mask": (inputnode, "brain_mask"), "dseg": (tissues, "out_dseg"),
        "probsegs": (tissues, "out_probseg")})
    return workflow


def add_restore_nodes(workflow, interface, prefix: str, inputnode, outputnode,
                      sources: dict) -> None:
    """One ``interface`` node per image output, and a MapNode for the probsegs.

    ``sources`` maps each field of :data:`IMAGE_OUTPUTS` and ``probsegs`` to the (node,
    output) holding it on the LPS frame; each node takes the original from
    ``inputnode.validated``, is named ``<prefix>_<field>`` and feeds ``outputnode.<field>``.
    """
    for field, (source, output) in sources.items():
        if field == "probsegs":
            node = pe.MapNode(interface(out_dtype="float32"), iterfield=["in_file"],
                              name=f"{prefix}_{field}")
        else:
            node = pe.Node(interface(out_dtype=IMAGE_DTYPES[field]), name=f"{prefix}_{field}")
        workflow.connect([
            (source, node, [(output, "in_file")]),
            (inputnode, node, [("validated", "reference_file")]),
            (node, outputnode, [("out_file", field)]),
        ])
