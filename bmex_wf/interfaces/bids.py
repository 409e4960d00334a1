"""Derivatives sink: one image's outputs into the BIDS-Derivatives tree, atomically."""

from __future__ import annotations

import json

from nipype.interfaces.base import BaseInterfaceInputSpec, Directory, File, SimpleInterface, TraitedSpec
from nipype.interfaces.base.traits_extension import InputMultiObject, isdefined, traits

from ..labels import TISSUE_NAMES


class _SinkInputSpec(BaseInterfaceInputSpec):
    """Inputs every sink shares: where to write, and the image the outputs derive from."""

    output_dir = Directory(mandatory=True, desc="root of the derivatives dataset")
    source_file = File(exists=True, mandatory=True, desc="the input image")
    bids_dir = Directory(desc="root of the input BIDS dataset (outputs mirror its layout)")
    contrast = traits.Enum("T1w", "T2w", mandatory=True, desc="contrast of the input")


class _BMEXDerivativesSinkInputSpec(_SinkInputSpec):
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
    voxel_mm = traits.Float(desc="the images are on the network grid of this voxel size "
                                 "(res- names, Resolution in the sidecars)")


class _BMEXDerivativesSinkOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True), desc="every file written")


class BMEXDerivativesSink(SimpleInterface):
    """Write an image's outputs and JSON sidecars under ``output_dir``, never partially.

    Names follow :mod:`bmex_wf.bids.derivatives` (``res-`` ones with ``voxel_mm``); the node
    always runs (outputs may have
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
        from ..bids.derivatives import TISSUES, write_image_outputs

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
            bids_dir=inputs.bids_dir if isdefined(inputs.bids_dir) else None,
            voxel_mm=inputs.voxel_mm if isdefined(inputs.voxel_mm) else None)
        self._results["out_files"] = [str(p) for p in written]
        return runtime


def _target_folder(inputs):
    """Derivatives folder of the source image (mirrors the BIDS layout when known)."""
    from ..bids.derivatives import derivative_folder

    return derivative_folder(inputs.output_dir, inputs.source_file,
                             inputs.bids_dir if isdefined(inputs.bids_dir) else None)


class _SpaceSinkInputSpec(_SinkInputSpec):
    space = traits.Str(mandatory=True, desc="output space, e.g. 'MNIInfant:cohort-1'")
    enhanced = File(exists=True, mandatory=True, desc="enhanced image in the template space")
    dseg = File(exists=True, mandatory=True, desc="tissue labels in the template space")
    xfm_forward = File(exists=True, mandatory=True, desc="image-to-template transform (.h5)")
    xfm_inverse = File(exists=True, mandatory=True, desc="template-to-image transform (.h5)")
    metadata = traits.Dict(desc="entries added to every sidecar")


class BMEXSpaceSink(SimpleInterface):
    """Write an image's template-space outputs and transforms, atomically.

    Names: :func:`bmex_wf.spaces.templateflow.space_output_names`; images get JSON sidecars.
    """

    input_spec = _SpaceSinkInputSpec
    output_spec = _BMEXDerivativesSinkOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        from pathlib import Path

        from ..bids.derivatives import TISSUES, atomic_copy, atomic_write_json, source_uri
        from ..spaces.templateflow import parse_output_space, space_output_names

        inputs = self.inputs
        space = parse_output_space(inputs.space)
        folder = _target_folder(inputs)
        names = space_output_names(Path(inputs.source_file).name, inputs.contrast, space)
        source = source_uri(inputs.source_file, inputs.bids_dir
                            if isdefined(inputs.bids_dir) else None)
        common = dict(inputs.metadata) if isdefined(inputs.metadata) else {}
        common.update({"Sources": [source], "SpatialReference": str(space),
                       "Template": space.name})
        if space.cohort is not None:
            common["Cohort"] = space.cohort
        sidecars = {
            "enhanced": {"Description": f"BME-X enhanced image ({inputs.contrast}) in "
                         f"{space} space", "SkullStripped": False},
            "dseg": {"Labels": {str(i): name for i, name in TISSUES.items()},
                     "Interpolation": "nearest neighbour"},
        }
        written = []
        for key, path in (("enhanced", inputs.enhanced), ("dseg", inputs.dseg),
                          ("xfm_forward", inputs.xfm_forward),
                          ("xfm_inverse", inputs.xfm_inverse)):
            target = atomic_copy(path, folder / names[key])
            written.append(target)
            if key in sidecars:
                json_path = str(target).replace(".nii.gz", ".json")
                written.append(atomic_write_json(json_path, {**common, **sidecars[key]}))
        self._results["out_files"] = [str(p) for p in written]
        return runtime


class _VolumesSinkInputSpec(_SinkInputSpec):
    in_tsv = File(exists=True, mandatory=True, desc="tissue-volume table")


class BMEXVolumesSink(SimpleInterface):
    """Write an image's tissue-volume table as ``<src>_space-<C>_desc-volumes_morph.tsv`` (+ JSON).

    ``space-<C>`` (as for the dseg) keeps the T1w and T2w tables of one session apart.
    """

    input_spec = _VolumesSinkInputSpec
    output_spec = _BMEXDerivativesSinkOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        from pathlib import Path

        from ..bids.derivatives import atomic_copy, atomic_write_json, source_entities, source_uri

        inputs = self.inputs
        src = source_entities(Path(inputs.source_file).name, inputs.contrast)
        target = atomic_copy(inputs.in_tsv,
                             _target_folder(inputs) / f"{src}_space-{inputs.contrast}_desc-volumes_morph.tsv")
        meta = {
            "Description": "Tissue volumes in mL: from the BME-X tissue labels (bmex) and from "
                           "3-class Atropos on the original and on the enhanced brain",
            "Sources": [source_uri(inputs.source_file, inputs.bids_dir
                                   if isdefined(inputs.bids_dir) else None)],
            **{f"{t}_mL": {"Description": f"{t} volume", "Units": "mL"}
               for t in (*TISSUE_NAMES, "brain")},
            "method": {"Description": "how the labels were obtained",
                       "Levels": {"bmex": "BME-X network labels",
                                  "atropos_original": "Atropos on the original brain",
                                  "atropos_enhanced": "Atropos on the enhanced brain"}},
        }
        sidecar = atomic_write_json(str(target).replace(".tsv", ".json"), meta)
        self._results["out_files"] = [str(target), str(sidecar)]
        return runtime
