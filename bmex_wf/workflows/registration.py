"""``init_registration_wf``: the enhanced brain and its tissue labels in a standard space."""

from __future__ import annotations

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ..interfaces.registration import ApplyTransforms, RegisterToTemplate
from ..interfaces.reportlets import RegistrationRPT
from ..labels import CONTRASTS
from ..spaces.templateflow import OutputSpace, TemplateFiles, fetch_template

#: Citation keys of templates in ``bmex_wf/data/boilerplate.bib``.
TEMPLATE_CITATIONS = {
    **{f"MNI152NLin2009{v}": "mni152nlin2009" for v in ("aAsym", "aSym", "bAsym", "bSym",
                                                          "cAsym", "cSym")},
    "MNI152NLin6Asym": "mni152nlin6asym",
    "MNIInfant": "mniinfant",
    "UNCInfant": "uncinfant",
}


def init_registration_wf(*, space: OutputSpace, contrast: str,
                         template: TemplateFiles | None = None, transform: str = "SyN",
                         iterations: str = "default", spacing_mm: float | None = None,
                         omp_nthreads: int = 1, seed: int = 0,
                         name: str | None = None) -> Workflow:
    """Register the enhanced brain to a TemplateFlow template and resample outputs there.

    Parameters
    ----------
    space : OutputSpace
        The template, its cohort resolved (:func:`bmex_wf.spaces.templateflow.resolve_space`).
    contrast : str
        ``T1w`` or ``T2w`` (the template image of that contrast is preferred).
    template : TemplateFiles, optional
        Template files; fetched through TemplateFlow when not given (at build time, so a
        template that is not available fails before anything runs).
    transform, iterations, spacing_mm, seed
        Registration settings (:func:`bmex_wf.spaces.registration.register_to_template`).
    omp_nthreads : int
        ITK threads of the registration and resampling nodes.
    name : str, optional
        Workflow name (default ``reg_<template>_wf``).

    Inputs
    ------
    enhanced
        Enhanced image, skull kept (resampled to the template).
    enhanced_brain
        Enhanced brain (registered to the template brain).
    brain_mask
        Brain mask of the enhanced brain.
    dseg
        Tissue labels on the enhanced image's grid.

    Outputs
    -------
    enhanced, dseg
        The enhanced image (linear) and the tissue labels (nearest neighbour) on the template grid.
    forward_xfm, inverse_xfm
        Composite ITK transforms (``.h5``): image to template, template to image.
    out_report
        Reportlet (SVG): template brain contours over the registered enhanced brain.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be 'T1w' or 'T2w', got {contrast!r}")
    template = template or fetch_template(space, contrast)
    label = space.label.replace("-", "").replace("_", "")
    workflow = Workflow(name=name or f"reg_{label}_wf")
    workflow.__desc__ = _description(space, template, transform, contrast)
    inputnode = pe.Node(niu.IdentityInterface(fields=["enhanced", "enhanced_brain",
                                                      "brain_mask", "dseg"]),
                        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["enhanced", "dseg", "forward_xfm",
                                                       "inverse_xfm", "out_report"]),
                         name="outputnode")

    register = pe.Node(RegisterToTemplate(
        template_image=str(template.image), template_mask=str(template.mask),
        transform=transform, iterations=iterations, seed=seed, num_threads=omp_nthreads,
        cross_contrast=template.contrast != contrast),
        name="register", n_procs=omp_nthreads, mem_gb=3)
    if spacing_mm:
        register.inputs.spacing_mm = spacing_mm
    warp_enhanced = pe.Node(ApplyTransforms(reference=str(template.image),
                                            interpolation="linear", num_threads=omp_nthreads),
                            name="warp_enhanced", n_procs=omp_nthreads)
    warp_dseg = pe.Node(ApplyTransforms(reference=str(template.image),
                                        interpolation="nearestNeighbor",
                                        num_threads=omp_nthreads),
                        name="warp_dseg", n_procs=omp_nthreads)
    report = pe.Node(RegistrationRPT(template_mask=str(template.mask)), name="report",
                     mem_gb=1.0)
    if "WM" in template.probsegs:
        report.inputs.template_wm = str(template.probsegs["WM"])

    workflow.connect([
        (inputnode, register, [("enhanced_brain", "moving_image"),
                               ("brain_mask", "moving_mask")]),
        (inputnode, warp_enhanced, [("enhanced", "in_file")]),
        (inputnode, warp_dseg, [("dseg", "in_file")]),
        (register, warp_enhanced, [("forward_transform", "transforms")]),
        (register, warp_dseg, [("forward_transform", "transforms")]),
        (register, report, [("warped", "in_file")]),
        (register, outputnode, [("forward_transform", "forward_xfm"),
                                ("inverse_transform", "inverse_xfm")]),
        (warp_enhanced, outputnode, [("out_file", "enhanced")]),
        (warp_dseg, outputnode, [("out_file", "dseg")]),
        (report, outputnode, [("out_report", "out_report")]),
    ])
    return workflow


def _description(space: OutputSpace, template: TemplateFiles, transform: str,
                 contrast: str) -> str:
    """Methods boilerplate of one registration."""
    cite = TEMPLATE_CITATIONS.get(space.name)
    tpl = f"*{space.name}*" + (f" [@{cite}]" if cite else "")
    cohort = f" (cohort {space.cohort})" if space.cohort is not None else ""
    stages = {"Rigid": "rigid", "Affine": "rigid and affine",
              "SyN": "rigid, affine and symmetric diffeomorphic (SyN)"}[transform]
    cross = (f" (the template has no {contrast} image: its {template.contrast} image was "
             "used, with mutual information)" if template.contrast != contrast else "")
    return f"""\
The enhanced {contrast} brain was registered to the {tpl} template{cohort}{cross},
obtained through TemplateFlow [@templateflow], with `antsRegistration` (ANTs [@ants], through
ANTsPy), in {stages} stages,
to the template brain extracted with its brain mask. The enhanced image and the tissue labels
(nearest-neighbour interpolation) were resampled into the template space with the resulting
transform.
"""
