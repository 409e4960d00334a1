"""Derivatives sink: one image's outputs into the BIDS-Derivatives tree, atomically."""

from __future__ import annotations

import json

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    Directory,
    File,
    InputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)


class _BMEXDerivativesSinkInputSpec(BaseInterfaceInputSpec):
    output_dir = Directory(mandatory=True, desc="root of the derivatives dataset")
    source_file = File(exists=True, mandatory=True, desc="the input image")
    bids_dir = Directory(desc="root of the input BIDS dataset (outputs mirror its layout)")
    contrast = traits.Enum("T1w", "T2w", mandatory=True, desc="contrast of the input")
    enhanced = File(exists=True, mandatory=True, desc="enhanced image, skull kept")
    enhanced_brain = File(exists=True, mandatory=True, desc="enhanced brain only")
    brain_mask = File(exists=True, mandatory=True, desc="brain mask")
    dseg = File(exists=True, mandatory=True, desc="tissue labels")
    probsegs = InputMultiObject(File(exists=True), mandatory=True,
                                desc="probability maps of CSF, GM and WM, in that order")
    qi = traits.Float(desc="quality index (TCT before / TCT after)")
    age_group = traits.Str(desc="age group of the model")
    model_file = traits.Str(desc="enhancement model used")
    qc = File(exists=True, desc="JSON provenance/QC record of the workflow")
    metadata = traits.Dict(desc="entries added to every sidecar (age, its source, ...)")


class _BMEXDerivativesSinkOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True), desc="every file written")


class BMEXDerivativesSink(SimpleInterface):
    """Write an image's outputs and JSON sidecars under ``output_dir``, never partially.

    Names follow :mod:`bmex_wf.utils.derivatives`; the node always runs (outputs may have
    been removed by hand), and it is cheap.
    """

    input_spec = _BMEXDerivativesSinkInputSpec
    output_spec = _BMEXDerivativesSinkOutputSpec
    always_run = True

    def _metadata(self) -> dict:
        meta = {}
        inputs = self.inputs
        if isdefined(inputs.qc):
            with open(inputs.qc) as handle:
                qc = json.load(handle)
            meta["BMEX"] = qc
            if "QI" in qc:
                meta["QI"] = qc["QI"]
        if isdefined(inputs.qi):
            meta["QI"] = round(float(inputs.qi), 4)
        if isdefined(inputs.age_group):
            meta["AgeGroup"] = inputs.age_group
        if isdefined(inputs.model_file):
            meta["Model"] = inputs.model_file
        if isdefined(inputs.metadata):
            meta.update(inputs.metadata)
        return meta

    def _run_interface(self, runtime):
        from ..utils.derivatives import TISSUES, write_image_outputs

        inputs = self.inputs
        if len(inputs.probsegs) != len(TISSUES):
            raise ValueError(f"{inputs.source_file}: expected {len(TISSUES)} probseg maps, "
                             f"got {len(inputs.probsegs)}")
        files = {"enhanced": inputs.enhanced, "enhanced_brain": inputs.enhanced_brain,
                 "brain_mask": inputs.brain_mask, "dseg": inputs.dseg}
        files.update({f"probseg_{name}": path
                      for name, path in zip(TISSUES.values(), inputs.probsegs)})
        written = write_image_outputs(
            output_dir=inputs.output_dir, source_file=inputs.source_file,
            contrast=inputs.contrast, files=files, metadata=self._metadata(),
            bids_dir=inputs.bids_dir if isdefined(inputs.bids_dir) else None)
        self._results["out_files"] = [str(p) for p in written]
        return runtime
