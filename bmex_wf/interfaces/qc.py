"""Nipype interface writing the per-image QC and provenance JSON."""

from __future__ import annotations

from nipype.interfaces.base import BaseInterfaceInputSpec, File, isdefined, traits

from .io import OutFileInterface


def _finite_or_none(value: float) -> float | None:
    """JSON has no NaN: undefined values are written as null."""
    import math

    return value if math.isfinite(value) else None


class _WriteQCInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="the original input image")
    model_file = File(exists=True, mandatory=True, desc="enhancement checkpoint used")
    builtin = traits.Bool(mandatory=True, desc="whether the built-in compact model was used")
    template = traits.Str(mandatory=True, desc="age template whose landmarks were matched")
    contrast = traits.Str(mandatory=True, desc="T1w or T2w")
    age_months = traits.Float(mandatory=True, desc="age in months used to pick the model")
    age_source = traits.Str("given", usedefault=True, desc="where the age came from")
    age_group = traits.Str(mandatory=True, desc="age group of the model and template")
    mask_source = traits.Str(mandatory=True, desc="brain-mask source actually used")
    qi = traits.Float(mandatory=True, desc="quality index TCT(original)/TCT(enhanced)")
    tct_before = traits.Float(mandatory=True, desc="tissue contrast (GM/WM) before enhancement")
    tct_after = traits.Float(mandatory=True, desc="tissue contrast (GM/WM) after enhancement")
    device = traits.Str(mandatory=True, desc="device the network ran on")
    precision = traits.Str(mandatory=True, desc="precision the network ran in")
    tiling = traits.Str(mandatory=True, desc="tiling scheme")
    geometry = traits.Dict(desc="tile geometry and work of the enhancement (Enhance.geometry)")
    enhance_seconds = traits.Float(mandatory=True, desc="network inference time")
    landmarks = traits.Dict(desc="template histogram landmarks used for matching")


class WriteQC(OutFileInterface):
    """Write QI, TCT, model, age, mask source, settings, timings and versions as JSON.

    Output ``out_file``: QC and provenance record (JSON).
    """

    input_spec = _WriteQCInputSpec

    def _write(self, runtime) -> str:
        import json
        from pathlib import Path

        from ..provenance import file_record, software_versions, utc_now

        inp = self.inputs
        record = {
            "QI": _finite_or_none(inp.qi),
            "TCTBefore": _finite_or_none(inp.tct_before),
            "TCTAfter": _finite_or_none(inp.tct_after),
            "Contrast": inp.contrast,
            "AgeMonths": inp.age_months,
            "AgeSource": inp.age_source,
            "AgeGroup": inp.age_group,
            "Model": {**file_record(inp.model_file), "builtin": bool(inp.builtin)},
            "Template": inp.template,
            "TemplateLandmarks": inp.landmarks if isdefined(inp.landmarks) else None,
            "MaskSource": inp.mask_source,
            "Device": inp.device,
            "Precision": inp.precision,
            "Tiling": inp.tiling,
            "TileGeometry": inp.geometry if isdefined(inp.geometry) else None,
            "Timings": {"EnhanceSeconds": round(inp.enhance_seconds, 2)},
            "Input": file_record(inp.in_file),
            "Software": software_versions(),
            "Created": utc_now(),
        }
        out = Path(runtime.cwd) / "qc.json"
        out.write_text(json.dumps(record, indent=2))
        return str(out)
