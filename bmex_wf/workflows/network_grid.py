"""Network-grid sub-workflow: the enhanced image and tissue maps on the network's own grid."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow
from niworkflows.interfaces.nibabel import ApplyMask

from ..interfaces.geometry import ResampleToReference, RestoreAxisOrder
from ..interfaces.postproc import SkullAddBack, TissueSegmentation
from .postproc import IMAGE_OUTPUTS, add_restore_nodes

#: Outputs of the network-grid sub-workflow (same meaning as the native-grid outputs).
NETWORK_GRID_FIELDS = (*IMAGE_OUTPUTS, "probsegs")
#: Outputnode fields of ``init_bmex_wf`` holding them: ``<field>_network``.
NETWORK_GRID_OUTPUTS = tuple(f"{field}_network" for field in NETWORK_GRID_FIELDS)


def init_network_grid_wf(*, voxel_mm: float, name: str = "network_grid_wf") -> Workflow:
    """Enhanced image, brain mask and tissue maps on the network grid, in the input's axes.

    The network runs on the input's LPS reorientation resampled to ``voxel_mm``; here that
    grid keeps its voxels and gets the input's axis order and orientation back by exact
    permutation and flips. Tissue labels and probabilities come from the class scores on
    that grid (no resampling); the skull-kept image takes the enhanced brain, matched to the
    original's intensities, and outside the brain the original resampled onto the grid by
    linear interpolation.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from bmex_wf.workflows.network_grid import init_network_grid_wf
            wf = init_network_grid_wf(voxel_mm=0.8)

    Parameters
    ----------
    voxel_mm : float
        Network voxel size of the model (for the boilerplate).

    Inputs
    ------
    recon, scores
        Enhanced intensities and the 4 class-score files on the network grid.
    grid_mask
        Brain mask on the network grid.
    validated, reoriented
        The input and its LPS reorientation.

    Outputs
    -------
    enhanced, enhanced_brain, brain_mask, dseg, probsegs
        As the native-grid outputs of :func:`~bmex_wf.workflows.postproc.init_bmex_postproc_wf`,
        on the network grid in the input's axis order.
    """
    workflow = Workflow(name=name)
    workflow.__desc__ = f"""\
The enhanced image, brain mask and tissue maps were also kept on the network's {voxel_mm:g} mm
grid, given the input's axis order and orientation without interpolation; there the tissue
labels come straight from the network's class maps, and voxels outside the brain mask come
from the original image resampled onto that grid by linear interpolation.
"""
    inputnode = pe.Node(niu.IdentityInterface(fields=[
        "recon", "scores", "grid_mask", "validated", "reoriented"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=list(NETWORK_GRID_FIELDS)),
                         name="outputnode")

    tissues = pe.Node(TissueSegmentation(), name="tissues")
    brain_only = pe.Node(ApplyMask(), name="brain_only")
    head_to_grid = pe.Node(ResampleToReference(order=1), name="head_to_grid")
    skull = pe.Node(SkullAddBack(), name="skull_add_back")
    workflow.connect([
        (inputnode, tissues, [("scores", "in_score_files")]),
        (inputnode, brain_only, [("recon", "in_file"), ("grid_mask", "in_mask")]),
        (inputnode, head_to_grid, [("reoriented", "in_file"), ("recon", "reference_file")]),
        (brain_only, skull, [("out_file", "in_enhanced")]),
        (head_to_grid, skull, [("out_file", "in_original")]),
        (inputnode, skull, [("grid_mask", "in_mask")]),
    ])
    add_restore_nodes(workflow, RestoreAxisOrder, "axes", inputnode, outputnode, {
        "enhanced": (skull, "out_file"), "enhanced_brain": (brain_only, "out_file"),
        "brain_mask": (inputnode, "grid_mask"), "dseg": (tissues, "out_dseg"),
        "probsegs": (tissues, "out_probseg")})
    return workflow
