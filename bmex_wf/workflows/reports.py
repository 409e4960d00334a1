"""Reportlets of one image, written to ``OUTPUT_DIR/sub-<label>/figures``."""

from __future__ import annotations

from pathlib import Path

from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe
from niworkflows.engine.workflows import LiterateWorkflow as Workflow

from ..interfaces.figures_sink import FiguresSink
from ..interfaces.reportlets import (
    BeforeAfterRPT,
    BrainMaskRPT,
    DisplayGrid,
    IntensityHistogramRPT,
    QCSummary,
    SuperResolutionRPT,
    TissueSegRPT,
)
from ..labels import CONTRASTS


def template_name(age_group: str, contrast: str) -> str:
    """Intensity template of an age group: ``Template-<group>-<contrast>``.

    Accepts ``Month24``, ``24``, ``Fetal``/``fetal`` or a full template name.

    >>> template_name("Month24", "T1w"), template_name("9", "T2w"), template_name("fetal", "T2w")
    ('Template-Month24-T1w', 'Template-Month9-T2w', 'Template-Fetal-T2w')
    """
    group = str(age_group).strip()
    if group.startswith("Template-"):
        return group
    if group.lower() == "fetal":
        group = "Fetal"
    elif group.isdigit():
        group = f"Month{group}"
    return f"Template-{group}-{contrast}"


def init_report_wf(*, output_dir: str | Path, contrast: str, display_spacing: float = 1.0,
                   superresolution: bool = False, name: str = "report_wf") -> Workflow:
    """Make the visual QC reportlets of one image and sink them into ``sub-<label>/figures``.

    Figures (``<src>`` = the source name without its suffix, ``<C>`` = ``contrast``):
    ``<src>_desc-summary_<C>.html`` (summary panel, with the QC record embedded),
    ``<src>_desc-enhancement_<C>.svg`` (original/enhanced flicker),
    ``<src>_space-<C>_desc-brain_mask.svg``, ``<src>_space-<C>_dseg.svg``,
    ``<src>_desc-histogram_<C>.svg`` and, with ``superresolution``,
    ``<src>_desc-superresolution_<C>.svg`` (input vs network-grid enhanced image).

    Parameters
    ----------
    output_dir
        The derivatives folder (``OUTPUT_DIR``).
    contrast
        ``T1w`` or ``T2w``.
    display_spacing
        Voxel size (mm) of the grid the figures are drawn from.
    superresolution
        Add the super-resolution figure (needs ``enhanced_network``).
    name
        Workflow name.

    Inputs
    ------
    source_file
        The input BIDS image (names the figures).
    in_file
        The original image.
    enhanced
        Enhanced image (with skull) on the original grid.
    brain_mask
        Brain mask on the original grid.
    dseg
        Tissue labels (1 CSF, 2 GM, 3 WM) on the original grid.
    qc
        The workflow's QC JSON.
    age_group
        Age group (``Month24``, ``Fetal``, ...): selects the template of the histogram plot.
    enhanced_network
        Enhanced image on the network grid (with ``superresolution``).

    Outputs
    -------
    out_figures
        The figure files written.
    """
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast must be 'T1w' or 'T2w', got {contrast!r}")
    workflow = Workflow(name=name)
    inputnode = pe.Node(niu.IdentityInterface(fields=[
        "source_file", "in_file", "enhanced", "brain_mask", "dseg", "qc", "age_group",
        "enhanced_network"]),
        name="inputnode")
    outputnode = pe.Node(niu.IdentityInterface(fields=["out_figures"]), name="outputnode")

    display = pe.Node(DisplayGrid(spacing=display_spacing), name="display", mem_gb=1.5)
    flicker = pe.Node(BeforeAfterRPT(before_label="original", after_label="enhanced"),
                      name="flicker", mem_gb=1.0)
    mask_rpt = pe.Node(BrainMaskRPT(), name="mask_rpt", mem_gb=1.0)
    seg_rpt = pe.Node(TissueSegRPT(), name="seg_rpt", mem_gb=1.0)
    summary = pe.Node(QCSummary(), name="summary")
    histogram = pe.Node(IntensityHistogramRPT(), name="histogram", mem_gb=1.5)
    template = pe.Node(niu.Function(function=template_name, input_names=["age_group",
                                                                         "contrast"],
                                    output_names=["template"]), name="template")
    template.inputs.contrast = contrast
    title = pe.Node(niu.Function(function=_basename, output_names=["title"]), name="title")

    figures = {
        "summary": (summary, {"desc": "summary"}),
        "flicker": (flicker, {"desc": "enhancement"}),
        "mask": (mask_rpt, {"space": contrast, "desc": "brain", "suffix": "mask"}),
        "dseg": (seg_rpt, {"space": contrast, "suffix": "dseg"}),
        "histogram": (histogram, {"desc": "histogram"}),
    }
    if superresolution:
        superres = pe.Node(SuperResolutionRPT(), name="superres", mem_gb=1.5)
        workflow.connect([(inputnode, superres, [("in_file", "in_file"),
                                                 ("enhanced_network", "in_enhanced")])])
        figures["superres"] = (superres, {"desc": "superresolution"})
    merge = pe.Node(niu.Merge(len(figures)), name="merge_figures", run_without_submitting=True)

    workflow.connect([
        (inputnode, display, [("in_file", "in_original"), ("enhanced", "in_enhanced"),
                              ("brain_mask", "in_mask"), ("dseg", "in_dseg")]),
        (display, flicker, [("out_original", "before"), ("out_enhanced", "after")]),
        (display, mask_rpt, [("out_original", "background_file"), ("out_mask", "mask_file")]),
        (display, seg_rpt, [("out_enhanced", "in_file"), ("out_dseg", "in_dseg"),
                            ("out_mask", "in_mask")]),
        (inputnode, title, [("source_file", "path")]),
        (title, summary, [("title", "title")]),
        (inputnode, summary, [("qc", "in_qc")]),
        (inputnode, template, [("age_group", "age_group")]),
        (template, histogram, [("template", "template")]),
        (inputnode, histogram, [("in_file", "in_file"), ("brain_mask", "in_mask")]),
        (merge, outputnode, [("out", "out_figures")]),
    ])
    for i, (key, (node, entities)) in enumerate(figures.items(), start=1):
        sink = pe.Node(FiguresSink(output_dir=str(output_dir), datatype="figures",
                                   dismiss_entities=("echo",), **entities),
                       name=f"ds_{key}", run_without_submitting=True)
        workflow.connect([
            (inputnode, sink, [("source_file", "source_file")]),
            (node, sink, [("out_report", "in_file")]),
            (sink, merge, [("out_file", f"in{i}")]),
        ])
    return workflow


def _basename(path):
    from pathlib import Path

    return Path(path).name
