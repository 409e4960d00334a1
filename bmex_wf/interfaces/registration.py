"""Nipype interfaces: registration to a template and resampling through its transforms."""

from __future__ import annotations

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec
from nipype.interfaces.base.traits_extension import InputMultiObject, isdefined, traits

from .io import OutFileInterface


class _RegisterToTemplateInputSpec(BaseInterfaceInputSpec):
    moving_image = File(exists=True, mandatory=True, desc="image to register (enhanced brain)")
    moving_mask = File(exists=True, desc="brain mask of the moving image (same grid)")
    template_image = File(exists=True, mandatory=True, desc="template image (fixed)")
    template_mask = File(exists=True, mandatory=True,
                         desc="template brain mask (same grid as the template image)")
    transform = traits.Enum("SyN", "Affine", "Rigid", usedefault=True,
                            desc="Rigid; Affine (rigid, affine); SyN (rigid, affine, SyN)")
    iterations = traits.Enum("default", "quick", usedefault=True,
                             desc="iteration preset ('quick': tests and benchmarks)")
    spacing_mm = traits.Float(desc="register copies of both images at this voxel size (mm)")
    cross_contrast = traits.Bool(False, usedefault=True,
                                 desc="the template's contrast differs: mutual information "
                                 "in the SyN stage")
    seed = traits.Int(0, usedefault=True, desc="random seed of antsRegistration")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="ITK threads")


class _RegisterToTemplateOutputSpec(TraitedSpec):
    warped = File(exists=True, desc="moving image resampled onto the template grid")
    forward_transform = File(exists=True, desc="moving -> template composite transform (.h5)")
    inverse_transform = File(exists=True, desc="template -> moving composite transform (.h5)")


class RegisterToTemplate(SimpleInterface):
    """antsRegistration (antspyx) of a brain to a template brain; composite H5 transforms.

    The template is brain-extracted with its mask; see
    :func:`bmex_wf.spaces.registration.register_to_template`.
    """

    input_spec = _RegisterToTemplateInputSpec
    output_spec = _RegisterToTemplateOutputSpec

    def _run_interface(self, runtime):
        from pathlib import Path

        import nibabel as nb
        from nipype.utils.filemanip import fname_presuffix

        from ..spaces.registration import register_to_template

        inputs = self.inputs
        moving_mask = nb.load(inputs.moving_mask) if isdefined(inputs.moving_mask) else None
        result = register_to_template(
            nb.load(inputs.moving_image), nb.load(inputs.template_image),
            out_dir=Path(runtime.cwd), moving_mask=moving_mask,
            fixed_mask=nb.load(inputs.template_mask), transform=inputs.transform,
            spacing_mm=inputs.spacing_mm if isdefined(inputs.spacing_mm) else None,
            iterations=inputs.iterations, seed=inputs.seed, num_threads=inputs.num_threads,
            syn_metric="MI" if inputs.cross_contrast else "CC")
        warped = fname_presuffix(inputs.moving_image, suffix="_warped", newpath=runtime.cwd)
        result.warped.to_filename(warped)
        self._results["warped"] = warped
        self._results["forward_transform"] = str(result.forward_transforms[0])
        self._results["inverse_transform"] = str(result.inverse_transforms[0])
        return runtime


class _ApplyTransformsInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="image to resample")
    reference = File(exists=True, mandatory=True, desc="image defining the output grid")
    transforms = InputMultiObject(File(exists=True), mandatory=True,
                                  desc="transform files in ANTs order (last applied first)")
    interpolation = traits.Enum("linear", "nearestNeighbor", "genericLabel", "bSpline",
                                usedefault=True, desc="interpolation ('nearestNeighbor' for "
                                "labels)")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="ITK threads")


class ApplyTransforms(OutFileInterface):
    """Resample an image through ITK/ANTs transform files (antspyx, no ANTs binaries).

    Output ``out_file``: the image on the reference grid.
    """

    input_spec = _ApplyTransformsInputSpec

    def _write(self, runtime) -> str:
        import nibabel as nb
        from nipype.utils.filemanip import fname_presuffix

        from ..spaces.registration import apply_transforms

        out = apply_transforms(nb.load(self.inputs.in_file), nb.load(self.inputs.reference),
                               list(self.inputs.transforms),
                               interpolation=self.inputs.interpolation,
                               num_threads=self.inputs.num_threads)
        out_file = fname_presuffix(self.inputs.in_file, suffix="_trans", newpath=runtime.cwd)
        out.to_filename(out_file)
        return out_file
