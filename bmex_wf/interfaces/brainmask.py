"""Nipype interface for the brain mask (:mod:`bmex_wf.brainmask`)."""

from __future__ import annotations

from nipype.interfaces.base import BaseInterfaceInputSpec, Directory, File, SimpleInterface, TraitedSpec
from nipype.interfaces.base.traits_extension import isdefined, traits
from nipype.utils.filemanip import fname_presuffix

from ..brainmask.choose import SOURCES


class _BrainMaskInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to mask (any orientation)")
    in_mask = File(exists=True, desc="precomputed brain mask, any grid (source 'precomputed'; "
                                     "'auto' then uses it)")
    source = traits.Enum(*SOURCES, usedefault=True,
                         desc="where the mask comes from: " + " | ".join(SOURCES))
    models_dir = Directory(exists=True, desc="folder searched first for T1T2w-model.pt and its "
                                             "template.hdr/.img")
    num_threads = traits.Int(1, usedefault=True, nohash=True,
                             desc="CPU threads for SimpleITK and torch")
    use_gpu = traits.Bool(False, usedefault=True, nohash=True,
                          desc="run LifespanStrip on a CUDA device")


class _BrainMaskOutputSpec(TraitedSpec):
    out_mask = File(exists=True, desc="binary brain mask (uint8) on the input grid")
    source_used = traits.Str(desc="the mask source that made out_mask (the 'auto' choice)")


class BrainMask(SimpleInterface):
    """Brain mask from LifespanStrip, a user mask, the non-zero voxels or a template.

    With ``source='auto'`` the choice is made from the inputs (a given mask, a
    skull-stripped image, available LifespanStrip weights) and recorded in
    ``source_used``.
    """

    input_spec = _BrainMaskInputSpec
    output_spec = _BrainMaskOutputSpec

    def _run_interface(self, runtime):
        from ..brainmask.choose import compute_brain_mask
        from ..image.io import load_image, save_image

        img = load_image(self.inputs.in_file)
        mask, used = compute_brain_mask(
            img,
            self.inputs.source,
            in_mask=self.inputs.in_mask if isdefined(self.inputs.in_mask) else None,
            models_dir=self.inputs.models_dir if isdefined(self.inputs.models_dir) else None,
            device="cuda" if self.inputs.use_gpu else "cpu",
            num_threads=self.inputs.num_threads,
        )
        out = fname_presuffix(self.inputs.in_file, suffix="_brainmask", newpath=runtime.cwd,
                              use_ext=False) + ".nii.gz"
        self._results["out_mask"] = str(save_image(mask, out))
        self._results["source_used"] = used
        return runtime
