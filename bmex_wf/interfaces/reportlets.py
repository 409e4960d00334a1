"""Reportlet interfaces for the visual QC reports (nireports/niworkflows based).

Every reportlet first brings its volumes onto a ~1 mm, axis-aligned display grid
(:mod:`bmex_wf.reports.display`), so nilearn draws its cuts without resampling an oblique
300³ volume again for every panel. Inputs already on a display grid (as made by
:class:`DisplayGrid`) pass through unchanged.
"""

from __future__ import annotations

import os

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec
from nipype.interfaces.base.traits_extension import isdefined, traits
from nipype.utils.filemanip import fname_presuffix
from nireports.interfaces.reporting import base as nrb
from nireports.interfaces.reporting.masks import SimpleShowMaskRPT

#: Contour colours of the tissue labels 1 (CSF), 2 (GM) and 3 (WM) boundaries.
TISSUE_COLORS = ["#ffd700", "#00ffff", "#ff00ff"]


def _display(runtime, reference, others, labels=()):
    from bmex_wf.reports.display import display_images

    return display_images(reference, others, labels=labels,
                          out_dir=os.path.join(runtime.cwd, "display"))


class _DisplayGridInputSpec(BaseInterfaceInputSpec):
    in_original = File(exists=True, mandatory=True,
                       desc="original image; its non-zero voxels set the field of view")
    in_enhanced = File(exists=True, desc="enhanced image on the original grid")
    in_mask = File(exists=True, desc="brain mask on the original grid")
    in_dseg = File(exists=True, desc="tissue label map on the original grid")
    spacing = traits.Float(1.0, usedefault=True, desc="display voxel size (mm)")


class _DisplayGridOutputSpec(TraitedSpec):
    out_original = File(exists=True, desc="original image on the display grid")
    out_enhanced = File(desc="enhanced image on the display grid")
    out_mask = File(desc="brain mask on the display grid (nearest neighbour)")
    out_dseg = File(desc="tissue labels on the display grid (nearest neighbour)")


class DisplayGrid(SimpleInterface):
    """Resample the images of one case onto a common ~1 mm RAS+ display grid, once."""

    input_spec = _DisplayGridInputSpec
    output_spec = _DisplayGridOutputSpec

    def _run_interface(self, runtime):
        from bmex_wf.reports.display import display_images

        others = {name: getattr(self.inputs, f"in_{name}")
                  for name in ("enhanced", "mask", "dseg")
                  if isdefined(getattr(self.inputs, f"in_{name}"))}
        files = display_images(self.inputs.in_original, others, labels=("mask", "dseg"),
                               out_dir=runtime.cwd, spacing_mm=self.inputs.spacing)
        self._results["out_original"] = files["reference"]
        for name in others:
            self._results[f"out_{name}"] = files[name]
        return runtime


class _BeforeAfterInputSpecRPT(nrb._SimpleBeforeAfterInputSpecRPT):
    before_label = traits.Str("original", usedefault=True, desc="label of the 'before' image")
    after_label = traits.Str("enhanced", usedefault=True, desc="label of the 'after' image")


class BeforeAfterRPT(nrb.SimpleBeforeAfterRPT):
    """Flicker of the original (before) vs the enhanced (after) image in three orientations.

    Hovering the figure animates between both images (nireports' before/after composition).
    """

    input_spec = _BeforeAfterInputSpecRPT

    def _post_run_hook(self, runtime):
        others = {"after": self.inputs.after}
        if isdefined(self.inputs.wm_seg):
            others["contour"] = self.inputs.wm_seg
        files = _display(runtime, self.inputs.before, others, labels=("contour",))
        self._fixed_image_label = self.inputs.after_label
        self._moving_image_label = self.inputs.before_label
        self._fixed_image = files["after"]
        self._moving_image = files["reference"]
        self._contour = files.get("contour")
        self._dismiss_affine = False
        # skip SimpleBeforeAfterRPT's hook, which would reset the images to the inputs
        return super(nrb.SimpleBeforeAfterRPT, self)._post_run_hook(runtime)


class BrainMaskRPT(SimpleShowMaskRPT):
    """Brain mask contour drawn on the original image (three orientations)."""

    def _post_run_hook(self, runtime):
        files = _display(runtime, self.inputs.background_file, {"mask": self.inputs.mask_file},
                         labels=("mask",))
        self._anat_file = files["reference"]
        self._mask_file = files["mask"]
        self._seg_files = [files["mask"]]
        self._masked = True
        return super(SimpleShowMaskRPT, self)._post_run_hook(runtime)


class _TissueSegInputSpecRPT(nrb._SVGReportCapableInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image the contours are drawn on")
    in_dseg = File(exists=True, mandatory=True, desc="tissue labels (1 CSF, 2 GM, 3 WM)")
    in_mask = File(exists=True, desc="brain mask (red contour; sets the cuts)")
    colors = traits.List(traits.Str, value=TISSUE_COLORS, usedefault=True,
                         desc="colours of the contours at levels 0.5, 1.5, 2.5")


class TissueSegRPT(nrb.ReportingInterface):
    """Tissue segmentation contours (brain, CSF/GM and GM/WM boundaries) on the enhanced image."""

    input_spec = _TissueSegInputSpecRPT

    def _post_run_hook(self, runtime):
        others = {"dseg": self.inputs.in_dseg}
        if isdefined(self.inputs.in_mask):
            others["mask"] = self.inputs.in_mask
        self._display_files = _display(runtime, self.inputs.in_file, others,
                                       labels=("dseg", "mask"))
        return super()._post_run_hook(runtime)

    def _generate_report(self):
        files = self._display_files
        segs, levels, colors = [files["dseg"]], [[0.5, 1.5, 2.5]], [list(self.inputs.colors)]
        if "mask" in files:
            segs.insert(0, files["mask"])
            levels.insert(0, [0.5])
            colors.insert(0, ["r"])
        _contour_report(files["reference"], segs, levels, colors,
                        bbox=files.get("mask", files["dseg"]), out_file=self._out_report,
                        compress=self.inputs.compress_report)


def _contour_report(image, segs, levels, colors, *, bbox, out_file, compress) -> None:
    """Contours of ``segs`` (one level list and colour list each) over ``image``, three views."""
    from nireports.reportlets.mosaic import plot_segs
    from nireports.reportlets.utils import compose_view

    compose_view(plot_segs(image_nii=image, seg_niis=segs, bbox_nii=bbox, levels=levels,
                           colors=colors, masked=False, compress=compress),
                 fg_svgs=None, out_file=out_file)


class _RegistrationInputSpecRPT(nrb._SVGReportCapableInputSpec):
    in_file = File(exists=True, mandatory=True,
                   desc="enhanced brain registered to the template (template grid)")
    template_mask = File(exists=True, mandatory=True, desc="template brain mask (red contour)")
    template_wm = File(exists=True,
                       desc="template white-matter probability map (magenta contour at 0.5)")


class RegistrationRPT(nrb.ReportingInterface):
    """Template brain contours over the image registered to the template.

    The red line is the template's brain boundary and the magenta line its grey/white-matter
    boundary (white-matter probability 0.5): a good registration puts the warped image's brain
    edge and white matter on them.
    """

    input_spec = _RegistrationInputSpecRPT

    def _post_run_hook(self, runtime):
        others = {"mask": self.inputs.template_mask}
        if isdefined(self.inputs.template_wm):
            others["wm"] = self.inputs.template_wm
        self._display_files = _display(runtime, self.inputs.in_file, others, labels=("mask",))
        return super()._post_run_hook(runtime)

    def _generate_report(self):
        files = self._display_files
        segs, levels, colors = [files["mask"]], [[0.5]], [["r"]]
        if "wm" in files:
            segs.append(files["wm"])
            levels.append([0.5])
            colors.append([TISSUE_COLORS[2]])
        _contour_report(files["reference"], segs, levels, colors, bbox=files["mask"],
                        out_file=self._out_report, compress=self.inputs.compress_report)


class _QCSummaryInputSpec(BaseInterfaceInputSpec):
    in_qc = File(exists=True, mandatory=True, desc="the workflow's QC JSON file")
    title = traits.Str(desc="heading of the panel (e.g. the source file name)")
    out_report = File("summary.html", usedefault=True, desc="name of the HTML fragment")


class _ReportOutputSpec(TraitedSpec):
    out_report = File(exists=True, desc="the reportlet")


class QCSummary(SimpleInterface):
    """Summary panel (HTML fragment): age, group, model, mask source, QI, TCT, run time."""

    input_spec = _QCSummaryInputSpec
    output_spec = _ReportOutputSpec

    def _run_interface(self, runtime):
        from pathlib import Path

        from bmex_wf.reports.figures import summary_html
        from bmex_wf.reports.qc import load_qc

        title = self.inputs.title if isdefined(self.inputs.title) else None
        out = Path(runtime.cwd) / self.inputs.out_report
        out.write_text(summary_html(load_qc(self.inputs.in_qc), title=title))
        self._results["out_report"] = str(out)
        return runtime


class _IntensityHistogramInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="original image")
    in_mask = File(exists=True, mandatory=True, desc="brain mask on the same grid")
    template = traits.Str(mandatory=True, desc="template name, e.g. 'Template-Month24-T1w'")
    in_matched = File(exists=True,
                      desc="the image after histogram matching (computed here when absent)")
    out_report = File("histogram.svg", usedefault=True, desc="name of the SVG figure")


class IntensityHistogramRPT(SimpleInterface):
    """Brain intensity histogram before and after matching, with the template's landmarks."""

    input_spec = _IntensityHistogramInputSpec
    output_spec = _ReportOutputSpec

    def _run_interface(self, runtime):
        from bmex_wf.preproc.intensity import template_landmarks
        from bmex_wf.reports.figures import matching_histogram_data, plot_histograms

        landmarks = template_landmarks(self.inputs.template)
        matched = self.inputs.in_matched if isdefined(self.inputs.in_matched) else None
        before, after = matching_histogram_data(self.inputs.in_file, self.inputs.in_mask,
                                                landmarks, matched=matched)
        out = fname_presuffix(self.inputs.out_report, newpath=runtime.cwd)
        self._results["out_report"] = plot_histograms(
            before, after, landmarks, out, title=f"Histogram matching to {self.inputs.template}")
        return runtime


class _SuperResolutionInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="original image")
    in_enhanced = File(exists=True, mandatory=True,
                       desc="enhanced image on the network grid (input's axis order)")
    out_report = File("superresolution.svg", usedefault=True, desc="name of the SVG figure")


class SuperResolutionRPT(SimpleInterface):
    """The input (nearest neighbour on the network grid) beside the network-grid enhanced
    image, in cuts across the input's thick slices."""

    input_spec = _SuperResolutionInputSpec
    output_spec = _ReportOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nb
        from nibabel.affines import voxel_sizes

        from bmex_wf.reports.superres import plot_superresolution

        voxel_mm = float(voxel_sizes(nb.load(self.inputs.in_enhanced).affine).max())
        out = fname_presuffix(self.inputs.out_report, newpath=runtime.cwd)
        self._results["out_report"] = plot_superresolution(
            self.inputs.in_file, self.inputs.in_enhanced, out, voxel_mm=round(voxel_mm, 3))
        return runtime
