"""Nipype interfaces after the network: skull add-back, quality index, tissue labels."""

from __future__ import annotations

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec
from nipype.interfaces.base.traits_extension import InputMultiObject, OutputMultiObject, isdefined, traits

from .io import OutFileInterface, as_image_error, check_same_grid, out_path, read, read_mask, save_like


class _SkullAddBackInputSpec(BaseInterfaceInputSpec):
    in_enhanced = File(exists=True, mandatory=True, desc="enhanced brain on the original grid")
    in_original = File(exists=True, mandatory=True, desc="original whole-head image")
    in_mask = File(
        exists=True, mandatory=True, desc="brain mask (resampled onto the original grid if needed)"
    )


class SkullAddBack(OutFileInterface):
    """Put the enhanced brain, matched to the original brain's intensities, back into the head.

    Output ``out_file``: whole-head image: enhanced brain in the original's intensities,
    original voxels outside the mask.
    """

    input_spec = _SkullAddBackInputSpec

    def _write(self, runtime) -> str:
        import numpy as np

        from ..postproc.skull import add_skull_back

        original = read(self.inputs.in_original)
        enhanced = read(self.inputs.in_enhanced)
        check_same_grid(enhanced, original, self.inputs.in_enhanced, self.inputs.in_original)
        mask = read_mask(self.inputs.in_mask, original)
        try:
            data = add_skull_back(
                np.asanyarray(enhanced.dataobj), np.asanyarray(original.dataobj), mask
            )
        except ValueError as exc:
            raise as_image_error(self.inputs.in_enhanced, exc) from None
        return save_like(data, original, self.inputs.in_enhanced, "_wholehead", runtime.cwd)


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

        original = read(self.inputs.in_original)
        enhanced = read(self.inputs.in_enhanced)
        dseg = read(self.inputs.in_dseg)
        check_same_grid(enhanced, original, self.inputs.in_enhanced, self.inputs.in_original)
        check_same_grid(dseg, original, self.inputs.in_dseg, self.inputs.in_original)
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
            images = [read(path) for path in self.inputs.in_score_files]
            for path, img in zip(self.inputs.in_score_files[1:], images[1:]):
                check_same_grid(img, images[0], path, in_file)
            reference = images[0]
            scores = np.stack([np.asarray(img.dataobj, dtype=np.float32) for img in images])
        if not np.all(np.isfinite(scores)):
            raise ImageError(f"{in_file}: class scores contain NaN or infinite values")
        labels = labels_from_scores(scores)
        probabilities = class_probabilities(scores)

        self._results["out_dseg"] = save_like(labels, reference, in_file, "_dseg", runtime.cwd)
        self._results["out_probseg"] = [
            save_like(
                probabilities[label],
                reference,
                in_file,
                f"_label-{LABELS[label]}_probseg",
                runtime.cwd,
            )
            for label in PROBSEG_LABELS
        ]
        table = (
            out_path(in_file, "_dseg", runtime.cwd, ext=".tsv")
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
