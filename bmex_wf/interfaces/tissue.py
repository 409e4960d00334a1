"""Nipype interface writing the per-image tissue-volume table (``desc-volumes_morph.tsv``)."""

from __future__ import annotations

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec
from nipype.interfaces.base.traits_extension import isdefined, traits

from .io import mask_on, out_path, read_named


class _TissueVolumesInputSpec(BaseInterfaceInputSpec):
    dseg = File(exists=True, mandatory=True,
                desc="network tissue labels (0 BG, 1 CSF, 2 GM, 3 WM) on the input grid")
    original_brain = File(exists=True, desc="original (not enhanced) image, segmented by Atropos "
                          "inside the brain mask")
    enhanced_brain = File(exists=True, desc="enhanced brain, segmented by Atropos inside the "
                          "brain mask")
    brain_mask = File(exists=True, desc="brain mask (any grid; resampled onto each image)")
    contrast = traits.Enum("T1w", "T2w", mandatory=True, desc="image contrast; names the "
                           "Atropos classes (T1w: CSF darkest, T2w: CSF brightest)")
    age_group = traits.Str(desc="BME-X age group (Fetal, Month0 ... Month24): grey and white "
                           "matter swap in the Atropos class order for Fetal, Month0, Month3")
    run_atropos = traits.Bool(True, usedefault=True,
                              desc="add Atropos 3-class volumes of the original and enhanced "
                              "brains")
    atropos_iterations = traits.Int(5, usedefault=True, desc="Atropos EM iterations")
    seed = traits.Int(0, usedefault=True, desc="ANTS_RANDOM_SEED while Atropos runs")


class _TissueVolumesOutputSpec(TraitedSpec):
    out_tsv = File(exists=True, desc="volumes table: method, CSF_mL, GM_mL, WM_mL, brain_mL; "
                   "rows bmex, atropos_original, atropos_enhanced")


class TissueVolumes(SimpleInterface):
    """Tissue volumes (mL) from the network dseg and, optionally, from Atropos on the
    original and on the enhanced brain."""

    input_spec = _TissueVolumesInputSpec
    output_spec = _TissueVolumesOutputSpec

    def _run_interface(self, runtime):
        from pathlib import Path

        from ..bids.derivatives import atomic_write_text
        from ..image.io import ImageError
        from ..postproc.volumes import atropos_dseg, tissue_volumes, volumes_table

        inp = self.inputs
        rows = {"bmex": tissue_volumes(read_named(inp.dseg))}
        if inp.run_atropos:
            missing = [name for name in ("original_brain", "enhanced_brain", "brain_mask")
                       if not isdefined(getattr(inp, name))]
            if missing:
                raise ImageError(f"{inp.dseg}: Atropos volumes need {', '.join(missing)} "
                                 "(or set run_atropos=False)")
            for method, path in (("atropos_original", inp.original_brain),
                                 ("atropos_enhanced", inp.enhanced_brain)):
                brain = read_named(path)
                seg = atropos_dseg(brain, mask_on(inp.brain_mask, brain),
                                   contrast=inp.contrast, iterations=inp.atropos_iterations,
                                   seed=inp.seed,
                                   age_group=inp.age_group if isdefined(inp.age_group) else None)
                rows[method] = tissue_volumes(seg)
        out = out_path(inp.dseg, "_volumes", runtime.cwd, ext=".tsv")
        atomic_write_text(Path(out), volumes_table(rows))
        self._results["out_tsv"] = out
        return runtime
