"""Nipype interfaces of the preprocessing steps: windowing, N4 and histogram matching.

They run the step functions of :mod:`bmex_wf.preproc.recipe`, the recipe training uses too.
"""

from __future__ import annotations

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec
from nipype.interfaces.base.traits_extension import isdefined, traits

from .io import OutFileInterface, as_image_error, data_of, read, read_mask, save_like


class _WindowIntensitiesInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3-D image to rescale")
    lower_percentile = traits.Range(
        0.0,
        100.0,
        0.001,
        usedefault=True,
        desc="percentile of the finite non-zero voxels mapped to 0",
    )
    upper_percentile = traits.Range(
        0.0,
        100.0,
        99.999,
        usedefault=True,
        desc="percentile of the finite non-zero voxels mapped to out_max",
    )
    out_max = traits.Float(1000.0, usedefault=True, desc="output value of the upper percentile")


class WindowIntensities(OutFileInterface):
    """Window intensities to 0..1000 between two percentiles (spec 8.3 step 2).

    Output ``out_file``: float32 image windowed to 0..out_max (clamped).
    """

    input_spec = _WindowIntensitiesInputSpec

    def _write(self, runtime) -> str:
        from ..preproc.recipe import window

        img = read(self.inputs.in_file, validate=True)
        try:
            out = window(
                img,
                self.inputs.lower_percentile,
                self.inputs.upper_percentile,
                self.inputs.out_max,
            )
        except ValueError as exc:
            raise as_image_error(self.inputs.in_file, exc) from None
        return save_like(data_of(out), img, self.inputs.in_file, "_windowed", runtime.cwd)


class _N4BiasCorrectionInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3-D image to correct")
    in_mask = File(
        exists=True, desc="mask of the voxels the bias field is fitted on (default: voxels > 0)"
    )
    shrink_factor = traits.Range(
        1, 16, 4, usedefault=True, desc="shrink factor of the image the field is fitted on"
    )
    iterations = traits.List(
        traits.Int(min=1),
        value=[50, 50, 30, 20],
        usedefault=True,
        minlen=1,
        desc="maximum iterations per fitting level (the release's schedule)",
    )
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="threads for SimpleITK")


class N4BiasCorrection(OutFileInterface):
    """SimpleITK N4 bias-field correction, fitted on a shrunk image (spec 8.3 step 3, 8.4 step 2).

    Output ``out_file``: bias-corrected float32 image.
    """

    input_spec = _N4BiasCorrectionInputSpec

    def _write(self, runtime) -> str:
        from ..preproc.recipe import correct_bias

        img = read(self.inputs.in_file)
        mask = read_mask(self.inputs.in_mask, img) if isdefined(self.inputs.in_mask) else None
        try:
            out = correct_bias(
                img,
                mask=mask,
                shrink_factor=self.inputs.shrink_factor,
                iterations=self.inputs.iterations,
                num_threads=self.inputs.num_threads,
            )
        except ValueError as exc:
            raise as_image_error(self.inputs.in_file, exc) from None
        return save_like(data_of(out), img, self.inputs.in_file, "_n4", runtime.cwd)


class _HistogramMatchInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="3-D image to match")
    template = traits.Str(
        xor=["landmarks_file"],
        mandatory=True,
        desc="template whose shipped landmarks are the reference, e.g. Template-Month24-T1w",
    )
    landmarks_file = File(
        exists=True,
        xor=["template"],
        mandatory=True,
        desc="JSON file of reference landmarks (as written by compute_landmarks)",
    )
    levels = traits.Int(1024, usedefault=True, desc="number of histogram levels")
    match_points = traits.Int(7, usedefault=True, desc="number of match points")


class _HistogramMatchOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="float32 image with the reference's histogram landmarks")
    out_landmarks = File(exists=True, desc="JSON record of the reference and source landmarks used")


class HistogramMatch(SimpleInterface):
    """Histogram matching to an age template with SimpleITK's semantics (spec 8.4 step 4)."""

    input_spec = _HistogramMatchInputSpec
    output_spec = _HistogramMatchOutputSpec

    def _run_interface(self, runtime):
        import json
        from pathlib import Path

        from ..preproc.intensity import LandmarksError
        from ..preproc.recipe import match_template

        reference = None  # the template's stored landmarks, looked up by match_template
        if isdefined(self.inputs.template):
            source_name = self.inputs.template
        else:
            try:
                reference = json.loads(Path(self.inputs.landmarks_file).read_text())
            except (OSError, ValueError) as exc:
                raise as_image_error(
                    self.inputs.landmarks_file, ValueError(f"not a landmarks JSON ({exc})")
                ) from None
            source_name = str(self.inputs.landmarks_file)
        img = read(self.inputs.in_file)
        try:
            matched, record = match_template(
                img, source_name, reference, self.inputs.levels, self.inputs.match_points
            )
        except LandmarksError as exc:  # unknown template, or a reference unfit for the settings
            raise (
                as_image_error(source_name, exc) if isdefined(self.inputs.landmarks_file) else exc
            ) from None
        except ValueError as exc:
            raise as_image_error(self.inputs.in_file, exc) from None
        self._results["out_file"] = save_like(
            data_of(matched), img, self.inputs.in_file, "_histmatch", runtime.cwd
        )
        landmarks = Path(runtime.cwd) / "histogram_landmarks.json"
        landmarks.write_text(json.dumps(record, indent=1))
        self._results["out_landmarks"] = str(landmarks)
        return runtime
