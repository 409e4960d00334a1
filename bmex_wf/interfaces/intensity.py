"""Nipype interfaces for the intensity steps: windowing, N4, histogram matching,
skull add-back, quality index and tissue segmentation outputs.

Windowing, N4 and histogram matching run the step functions of
:mod:`bmex_wf.preproc.recipe`, the recipe training uses too.

Each interface reads its inputs, computes everything, then writes its outputs
atomically, so a bad input gives one :class:`~bmex_wf.image.io.ImageError`
naming the file and leaves no output file behind.
"""

from __future__ import annotations

from nipype.interfaces.base import (
    BaseInterfaceInputSpec,
    File,
    InputMultiObject,
    OutputMultiObject,
    SimpleInterface,
    TraitedSpec,
    isdefined,
    traits,
)
from nipype.utils.filemanip import fname_presuffix


def _read(path, validate: bool = False):
    """Read an image as float32-ready nibabel image (``validate``: full input checks)."""
    from ..image.io import load_image, read_image

    return load_image(path) if validate else read_image(path)


def _read_mask(path, reference):
    """Boolean mask from ``path`` on the grid of the ``reference`` image."""
    import numpy as np

    from ..image.io import validate_mask

    return np.asanyarray(validate_mask(path, reference).dataobj) > 0


def _same_grid(img, reference, path, reference_path) -> None:
    """Raise ImageError unless ``img`` lies on the grid of ``reference``."""
    import numpy as np

    from ..image.io import ImageError

    if img.shape[:3] != reference.shape[:3] or not np.allclose(
        img.affine, reference.affine, atol=1e-4
    ):
        raise ImageError(
            f"{path}: grid (shape {img.shape[:3]}) differs from that of {reference_path} "
            f"(shape {reference.shape[:3]}); resample it first"
        )


def _save(data, reference, in_file, suffix, cwd) -> str:
    """Write ``data`` with the reference's geometry as ``<in_file stem><suffix>.nii.gz`` in ``cwd``."""
    from ..image.header import header_image
    from ..image.io import save_image

    out = fname_presuffix(in_file, suffix=suffix, newpath=cwd, use_ext=False) + ".nii.gz"
    save_image(header_image(data, reference.affine, reference.header), out)
    return out


def _data(img):
    """The array of an image made by a :mod:`bmex_wf.preproc.recipe` step."""
    import numpy as np

    return np.asanyarray(img.dataobj)


def _as_image_error(path, exc: ValueError):
    """ImageError ``"<path>: <problem>"`` from a ValueError raised by a utility function."""
    from ..image.io import ImageError

    return exc if isinstance(exc, ImageError) else ImageError(f"{path}: {exc}")


# --------------------------------------------------------------------------------------
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


class _WindowIntensitiesOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="float32 image windowed to 0..out_max (clamped)")


class WindowIntensities(SimpleInterface):
    """Window intensities to 0..1000 between two percentiles (spec 8.3 step 2)."""

    input_spec = _WindowIntensitiesInputSpec
    output_spec = _WindowIntensitiesOutputSpec

    def _run_interface(self, runtime):
        from ..preproc.recipe import window

        img = _read(self.inputs.in_file, validate=True)
        try:
            out = window(
                img,
                self.inputs.lower_percentile,
                self.inputs.upper_percentile,
                self.inputs.out_max,
            )
        except ValueError as exc:
            raise _as_image_error(self.inputs.in_file, exc) from None
        self._results["out_file"] = _save(
            _data(out), img, self.inputs.in_file, "_windowed", runtime.cwd
        )
        return runtime


# --------------------------------------------------------------------------------------
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


class _N4BiasCorrectionOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="bias-corrected float32 image")


class N4BiasCorrection(SimpleInterface):
    """SimpleITK N4 bias-field correction, fitted on a shrunk image (spec 8.3 step 3, 8.4 step 2)."""

    input_spec = _N4BiasCorrectionInputSpec
    output_spec = _N4BiasCorrectionOutputSpec

    def _run_interface(self, runtime):
        from ..preproc.recipe import correct_bias

        img = _read(self.inputs.in_file)
        mask = _read_mask(self.inputs.in_mask, img) if isdefined(self.inputs.in_mask) else None
        try:
            out = correct_bias(
                img,
                mask=mask,
                shrink_factor=self.inputs.shrink_factor,
                iterations=self.inputs.iterations,
                num_threads=self.inputs.num_threads,
            )
        except ValueError as exc:
            raise _as_image_error(self.inputs.in_file, exc) from None
        self._results["out_file"] = _save(_data(out), img, self.inputs.in_file, "_n4", runtime.cwd)
        return runtime


# --------------------------------------------------------------------------------------
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
                raise _as_image_error(
                    self.inputs.landmarks_file, ValueError(f"not a landmarks JSON ({exc})")
                ) from None
            source_name = str(self.inputs.landmarks_file)
        img = _read(self.inputs.in_file)
        try:
            matched, record = match_template(
                img, source_name, reference, self.inputs.levels, self.inputs.match_points
            )
        except LandmarksError as exc:  # unknown template, or a reference unfit for the settings
            raise (
                _as_image_error(source_name, exc) if isdefined(self.inputs.landmarks_file) else exc
            ) from None
        except ValueError as exc:
            raise _as_image_error(self.inputs.in_file, exc) from None
        self._results["out_file"] = _save(
            _data(matched), img, self.inputs.in_file, "_histmatch", runtime.cwd
        )
        landmarks = Path(runtime.cwd) / "histogram_landmarks.json"
        landmarks.write_text(json.dumps(record, indent=1))
        self._results["out_landmarks"] = str(landmarks)
        return runtime


# --------------------------------------------------------------------------------------
class _SkullAddBackInputSpec(BaseInterfaceInputSpec):
    in_enhanced = File(exists=True, mandatory=True, desc="enhanced brain on the original grid")
    in_original = File(exists=True, mandatory=True, desc="original whole-head image")
    in_mask = File(
        exists=True, mandatory=True, desc="brain mask (resampled onto the original grid if needed)"
    )


class _SkullAddBackOutputSpec(TraitedSpec):
    out_file = File(
        exists=True,
        desc="whole-head image: enhanced brain in the original's intensities, "
        "original voxels outside the mask",
    )


class SkullAddBack(SimpleInterface):
    """Put the enhanced brain, matched to the original brain's intensities, back into the head."""

    input_spec = _SkullAddBackInputSpec
    output_spec = _SkullAddBackOutputSpec

    def _run_interface(self, runtime):
        import numpy as np

        from ..postproc.skull import add_skull_back

        original = _read(self.inputs.in_original)
        enhanced = _read(self.inputs.in_enhanced)
        _same_grid(enhanced, original, self.inputs.in_enhanced, self.inputs.in_original)
        mask = _read_mask(self.inputs.in_mask, original)
        try:
            data = add_skull_back(
                np.asanyarray(enhanced.dataobj), np.asanyarray(original.dataobj), mask
            )
        except ValueError as exc:
            raise _as_image_error(self.inputs.in_enhanced, exc) from None
        self._results["out_file"] = _save(
            data, original, self.inputs.in_enhanced, "_wholehead", runtime.cwd
        )
        return runtime


# --------------------------------------------------------------------------------------
class _QualityIndexInputSpec(BaseInterfaceInputSpec):
    in_original = File(
        exists=True, mandatory=True, desc="original image histogram-matched to the age template"
    )
    in_enhanced = File(exists=True, mandatory=True, desc="enhanced image on the same grid")
    in_dseg = File(
        exists=True, mandatory=True, desc="tissue labels on the same grid (2 = GM, 3 = WM)"
    )


class _QualityIndexOutputSpec(TraitedSpec):
    qi = traits.Float(desc="quality index TCT(original) / TCT(enhanced); NaN if undefined")
    tct_before = traits.Float(desc="GM/WM tissue contrast of the original (matched) image")
    tct_after = traits.Float(desc="GM/WM tissue contrast of the enhanced image")
    out_report = File(
        exists=True, desc="JSON with qi, tct_before and tct_after (null when undefined)"
    )


class QualityIndex(SimpleInterface):
    """The release's TCT-based quality index (spec 8.4 step 12)."""

    input_spec = _QualityIndexInputSpec
    output_spec = _QualityIndexOutputSpec

    def _run_interface(self, runtime):
        import json
        import math
        from pathlib import Path

        import numpy as np

        from ..postproc.quality import quality_report

        original = _read(self.inputs.in_original)
        enhanced = _read(self.inputs.in_enhanced)
        dseg = _read(self.inputs.in_dseg)
        _same_grid(enhanced, original, self.inputs.in_enhanced, self.inputs.in_original)
        _same_grid(dseg, original, self.inputs.in_dseg, self.inputs.in_original)
        report = quality_report(
            np.asanyarray(original.dataobj),
            np.asanyarray(enhanced.dataobj),
            np.rint(np.asanyarray(dseg.dataobj)).astype(np.int16),
        )
        self._results.update(report)
        out = Path(runtime.cwd) / "quality.json"
        out.write_text(
            json.dumps(
                {k: (round(v, 4) if math.isfinite(v) else None) for k, v in report.items()},
                indent=1,
            )
        )
        self._results["out_report"] = str(out)
        return runtime


# --------------------------------------------------------------------------------------
class _TissueSegmentationInputSpec(BaseInterfaceInputSpec):
    in_scores = File(
        exists=True,
        xor=["in_score_files"],
        mandatory=True,
        desc="4-D image of the 4 class scores (BG, CSF, GM, WM) on its last axis",
    )
    in_score_files = InputMultiObject(
        File(exists=True),
        xor=["in_scores"],
        mandatory=True,
        minlen=4,
        maxlen=4,
        desc="the 4 class-score maps (BG, CSF, GM, WM) as 3-D images",
    )


class _TissueSegmentationOutputSpec(TraitedSpec):
    out_dseg = File(
        exists=True, desc="uint8 label map (0 BG, 1 CSF, 2 GM, 3 WM): argmax of the scores"
    )
    out_probseg = OutputMultiObject(
        File(exists=True), desc="probability maps of CSF, GM and WM (softmax of the scores)"
    )
    out_label_table = File(exists=True, desc="BIDS dseg.tsv look-up table of the labels")


class TissueSegmentation(SimpleInterface):
    """Labels (argmax) and class probabilities (softmax) from the stitched class scores."""

    input_spec = _TissueSegmentationInputSpec
    output_spec = _TissueSegmentationOutputSpec

    def _run_interface(self, runtime):
        from pathlib import Path

        import numpy as np

        from ..image.io import ImageError
        from ..postproc.class_scores import (
            LABELS,
            PROBSEG_LABELS,
            class_probabilities,
            labels_from_scores,
            write_label_table,
        )

        if isdefined(self.inputs.in_scores):
            in_file = self.inputs.in_scores
            reference, scores = self._read_4d(in_file)
        else:
            in_file = self.inputs.in_score_files[0]
            images = [_read(path) for path in self.inputs.in_score_files]
            for path, img in zip(self.inputs.in_score_files[1:], images[1:]):
                _same_grid(img, images[0], path, in_file)
            reference = images[0]
            scores = np.stack([np.asarray(img.dataobj, dtype=np.float32) for img in images])
        if not np.all(np.isfinite(scores)):
            raise ImageError(f"{in_file}: class scores contain NaN or infinite values")
        labels = labels_from_scores(scores)
        probabilities = class_probabilities(scores)

        self._results["out_dseg"] = _save(labels, reference, in_file, "_dseg", runtime.cwd)
        self._results["out_probseg"] = [
            _save(
                probabilities[label],
                reference,
                in_file,
                f"_label-{LABELS[label]}_probseg",
                runtime.cwd,
            )
            for label in PROBSEG_LABELS
        ]
        table = (
            fname_presuffix(in_file, suffix="_dseg", newpath=runtime.cwd, use_ext=False) + ".tsv"
        )
        self._results["out_label_table"] = str(write_label_table(Path(table)))
        return runtime

    @staticmethod
    def _read_4d(path):
        """(3-D reference image, (4, x, y, z) float32 scores) from a 4-D class-score file."""
        import zlib

        import nibabel as nib
        import numpy as np

        from ..image.io import ImageError

        try:
            img = nib.load(str(path))
            data = np.asarray(img.dataobj, dtype=np.float32)
        except (
            OSError,
            EOFError,
            ValueError,
            zlib.error,
            nib.filebasedimages.ImageFileError,
        ) as exc:
            raise ImageError(f"{path}: not a readable 4-D class-score image ({exc})") from None
        if data.ndim != 4 or data.shape[3] != 4:
            raise ImageError(
                f"{path}: expected 4 class-score volumes on the 4th axis, got shape {data.shape}"
            )
        reference = nib.Nifti1Image(
            data[..., 0], img.affine, nib.Nifti1Header.from_header(img.header)
        )
        return reference, np.moveaxis(data, 3, 0)
