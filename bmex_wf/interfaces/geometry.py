"""Nipype interfaces for the geometry steps: input validation, exact LPS
reorientation and its inverse (onto the input's grid, or onto the input's axis order for
another grid), and resampling.

Thin wrappers around :mod:`bmex_wf.image.io`,
:mod:`bmex_wf.image.orientation` and :mod:`bmex_wf.image.resample`; reorientation and
the enhancement grid go through the steps of :mod:`bmex_wf.preproc.recipe`. Outputs are
written atomically after all computation, so a bad input raises one
:class:`~bmex_wf.image.io.ImageError` naming the file and leaves no
output file behind.
"""

from __future__ import annotations

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from .io import OutFileInterface, as_image_error, is_plain_nifti, write_image


# --------------------------------------------------------------------------------------
class _ValidateImageInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="input image (NIfTI or Analyze)")


class _ValidateImageOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the validated 3-D NIfTI-1 image (the input itself when "
                                      "it is one already; else a squeezed/converted copy)")
    axcodes = traits.Str(desc="closest world directions of the voxel axes, e.g. 'RAS'")
    zooms = traits.List(traits.Float, desc="voxel sizes in mm")
    shape = traits.List(traits.Int, desc="3-D shape of the image")


class ValidateImage(SimpleInterface):
    """Check an input image: one 3-D volume, finite, not empty, sane voxel sizes.

    Anything else raises :class:`~bmex_wf.image.io.ImageError`
    ``"<file>: <problem>"``.
    """

    input_spec = _ValidateImageInputSpec
    output_spec = _ValidateImageOutputSpec

    def _run_interface(self, runtime):
        from nibabel.affines import voxel_sizes

        from ..image.io import load_image
        from ..image.orientation import axcodes

        img = load_image(self.inputs.in_file)
        if is_plain_nifti(self.inputs.in_file):
            self._results["out_file"] = self.inputs.in_file
        else:
            self._results["out_file"] = write_image(img, self.inputs.in_file, "_valid", runtime.cwd)
        self._results["axcodes"] = axcodes(img)
        self._results["zooms"] = [float(z) for z in voxel_sizes(img.affine)]
        self._results["shape"] = [int(n) for n in img.shape]
        return runtime


# --------------------------------------------------------------------------------------
class _ReorientLPSInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3-D image in any orientation")


class _ReorientLPSOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="the image with voxel axes closest to L, P, S (exact "
                                      "permutation/flip, world geometry kept)")
    axcodes = traits.Str(desc="voxel axis codes of the input, e.g. 'RAS'")


class ReorientLPS(SimpleInterface):
    """Reorient an image to the closest LPS axes, keeping its exact world geometry."""

    input_spec = _ReorientLPSInputSpec
    output_spec = _ReorientLPSOutputSpec

    def _run_interface(self, runtime):
        from ..image.io import read_image
        from ..image.orientation import axcodes
        from ..preproc.recipe import reorient

        img = read_image(self.inputs.in_file)
        self._results["axcodes"] = axcodes(img)
        if axcodes(img) == "LPS" and is_plain_nifti(self.inputs.in_file):
            self._results["out_file"] = self.inputs.in_file
        else:
            self._results["out_file"] = write_image(reorient(img), self.inputs.in_file, "_lps",
                                               runtime.cwd)
        return runtime


# --------------------------------------------------------------------------------------
class _RestoreOrientationInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True,
                   desc="image on the LPS grid of the reference (as made by ReorientLPS)")
    reference_file = File(exists=True, mandatory=True,
                          desc="the original image whose array order and header are restored")
    out_dtype = traits.Enum("keep", "float32", "uint8", "int16", "uint16", usedefault=True,
                            desc="on-disk data type ('keep': the input's)")


class _Restore(OutFileInterface):
    """Read the image and the original, apply ``bmex_wf.image.orientation.<_function>``, write."""

    _function = ""
    _suffix = ""

    def _write(self, runtime) -> str:
        from ..image import orientation
        from ..image.io import read_image

        img = read_image(self.inputs.in_file)
        original = read_image(self.inputs.reference_file)
        dtype = None if self.inputs.out_dtype == "keep" else self.inputs.out_dtype
        try:
            out = getattr(orientation, self._function)(img, original, dtype=dtype)
        except ValueError as exc:
            raise as_image_error(self.inputs.in_file, exc) from None
        return write_image(out, self.inputs.in_file, self._suffix, runtime.cwd)


class RestoreOrientation(_Restore):
    """Put an LPS-frame image back on the original image's grid (the exact inverse).

    Output ``out_file``: the image on the original grid: same shape, affine, qform/sform and
    codes as the reference.
    """

    input_spec = _RestoreOrientationInputSpec
    _function, _suffix = "restore_orientation", "_orig"


# --------------------------------------------------------------------------------------
class _RestoreAxisOrderInputSpec(_RestoreOrientationInputSpec):
    in_file = File(exists=True, mandatory=True,
                   desc="image on a grid of the LPS frame of the reference (e.g. the network's)")
    reference_file = File(exists=True, mandatory=True,
                          desc="the original image whose axis order and orientation are restored")


class RestoreAxisOrder(_Restore):
    """Give an LPS-frame grid the original image's axis order, exactly (no interpolation).

    Output ``out_file``: the same grid (voxel size, field of view) in the reference's axis order
    and direction cosines.
    """

    input_spec = _RestoreAxisOrderInputSpec
    _function, _suffix = "restore_axis_order", "_axes"


# --------------------------------------------------------------------------------------
class _ResampleToSpacingInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3-D image")
    spacing = traits.Range(low=0.05, high=20.0, mandatory=True,
                           desc="new isotropic voxel size in mm (0.8; 0.75 for fetal images)")
    order = traits.Enum(1, 0, usedefault=True, desc="interpolation: 1 linear, 0 nearest (masks)")
    centered = traits.Bool(False, usedefault=True,
                           desc="use the skull-strip grid rule (floor, centred origin) instead "
                                "of the enhancement rule (round, origin kept)")


class ResampleToSpacing(OutFileInterface):
    """Resample to an isotropic spacing with the release's grid rules, world-consistently.

    Output ``out_file``: resampled image (float32 for linear, input type for nearest).
    """

    input_spec = _ResampleToSpacingInputSpec

    def _write(self, runtime) -> str:
        from ..image.io import read_image
        from ..image.resample import resample_centered
        from ..preproc.recipe import to_network_grid

        img = read_image(self.inputs.in_file)
        rule = resample_centered if self.inputs.centered else to_network_grid
        out = rule(img, self.inputs.spacing, order=self.inputs.order)
        suffix = f"_{self.inputs.spacing:g}mm".replace(".", "p")
        return write_image(out, self.inputs.in_file, suffix, runtime.cwd)


# --------------------------------------------------------------------------------------
class _ResampleToReferenceInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3-D image or mask to resample")
    reference_file = File(exists=True, mandatory=True, desc="image defining the target grid")
    order = traits.Enum(1, 0, usedefault=True, desc="interpolation: 1 linear, 0 nearest (masks)")


class ResampleToReference(OutFileInterface):
    """Resample an image onto a reference grid in world coordinates.

    Output ``out_file``: the input on the reference grid (reference header fields).
    """

    input_spec = _ResampleToReferenceInputSpec

    def _write(self, runtime) -> str:
        from ..image.io import read_image
        from ..image.resample import resample_to_reference

        img = read_image(self.inputs.in_file)
        reference = read_image(self.inputs.reference_file)
        out = resample_to_reference(img, reference, order=self.inputs.order)
        return write_image(out, self.inputs.in_file, "_resampled", runtime.cwd)
