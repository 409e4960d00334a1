"""Enhancement sub-workflow: network E over the whole preprocessed brain."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow
from niworkflows.interfaces.nibabel import SplitSeries

from ..interfaces.enhance import Enhance
from ..models.geometry import default_geometry

#: Outputs of the enhancement sub-workflow.
ENHANCE_OUTPUTS = ("recon", "scores", "device", "precision", "seconds", "geometry")


def init_bmex_enhance_wf(*, model_file: str, builtin: bool, group: str, contrast: str,
                         tiling: str = "fast", precision: str = "auto", use_gpu: bool = False,
                         omp_nthreads: int = 1, name: str = "enhance_wf") -> Workflow:
    """Run network E on the network input; split its four class scores.

    Workflow Graph
        .. workflow::
            :graph2use: orig
            :simple_form: yes

            from bmex_wf.workflows.enhance import init_bmex_enhance_wf
            wf = init_bmex_enhance_wf(model_file="BMEX-Month24-T1-model.pt", builtin=False,
                                      group="Month24", contrast="T1w")

    Parameters
    ----------
    model_file : str
        The checkpoint (resolved, not searched for).
    builtin : bool
        Whether it is the built-in model (for the boilerplate).
    group, contrast : str
        Age group and contrast it serves.
    tiling, precision, use_gpu, omp_nthreads
        Inference settings; the tile geometry is the default of the device kind
        (``use_gpu``), part of the node's hash.

    Inputs
    ------
    in_file, in_mask
        Network input and brain mask on the network grid.

    Outputs
    -------
    recon
        Enhanced intensities on the network grid.
    scores
        The 4 class-score maps (BG, CSF, GM, WM) on the network grid, one file each.
    device, precision, seconds
        Where and how the network ran, and how long it took.
    geometry
        Tile geometry and work of the run (for the QC record).
    """
    workflow = Workflow(name=name)
    model = ("the compact built-in model of *bmex-wf* (a network of the BME-X family trained by "
             "the *bmex-wf* project, not the published BME-X weights)" if builtin
             else f"the published BME-X weights for the {group} {contrast} group")
    workflow.__desc__ = f"""\
Network inference with {model} produced the enhanced brain and four tissue-class maps
(background, CSF, grey matter, white matter).
"""
    inputnode = pe.Node(niu.IdentityInterface(fields=["in_file", "in_mask"]), name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=list(ENHANCE_OUTPUTS)), name="outputnode")
    geometry = default_geometry("gpu" if use_gpu else "cpu").name
    enhance = pe.Node(Enhance(model_file=str(model_file), tiling=tiling, geometry=geometry,
                              precision=precision, use_gpu=use_gpu, num_threads=omp_nthreads),
                      name="enhance", n_procs=omp_nthreads, mem_gb=4)
    split_scores = pe.Node(SplitSeries(), name="split_scores")
    workflow.connect([
        (inputnode, enhance, [("in_file", "in_file"), ("in_mask", "in_mask")]),
        (enhance, split_scores, [("out_scores", "in_file")]),
        (enhance, outputnode, [("out_file", "recon"), ("device", "device"),
                               ("precision", "precision"), ("seconds", "seconds"),
                               ("geometry", "geometry")]),
        (split_scores, outputnode, [("out_files", "scores")]),
    ])
    return workflow
