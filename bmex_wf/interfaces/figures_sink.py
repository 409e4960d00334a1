"""Atomic figures sink (its own module: niworkflows' BIDS interfaces are slow to import)."""

from __future__ import annotations

from nipype.interfaces.base import Directory
from niworkflows.interfaces.bids import DerivativesDataSink
from niworkflows.interfaces.bids import _DerivativesDataSinkInputSpec as _DDSInputSpec


class _FiguresSinkInputSpec(_DDSInputSpec):
    output_dir = Directory(mandatory=True, desc="derivatives folder the figures go into")


class FiguresSink(DerivativesDataSink):
    """niworkflows' DerivativesDataSink for figures, writing into ``output_dir`` atomically.

    Files are named by the parent class in the node's folder, then copied under
    ``output_dir`` with a temporary name and renamed, so no partial figure is ever visible.
    SVG figures are finalised (:func:`bmex_wf.reports.figures.finalize_svg`) on the way.
    """

    input_spec = _FiguresSinkInputSpec
    out_path_base = ""

    def _run_interface(self, runtime):
        from pathlib import Path

        from bmex_wf.bids.derivatives import atomic_copy, atomic_write_text
        from bmex_wf.reports.figures import finalize_svg

        runtime = super()._run_interface(runtime)
        staged = self._results["out_file"]
        staged_list = staged if isinstance(staged, list) else [staged]
        final = []
        for path in map(Path, staged_list):
            target = Path(self.inputs.output_dir) / path.relative_to(runtime.cwd)
            target.parent.mkdir(parents=True, exist_ok=True)
            if path.suffix == ".svg":
                atomic_write_text(target, finalize_svg(path.read_text(encoding="utf-8")))
            else:
                atomic_copy(path, target)
            final.append(str(target))
        self._results["out_file"] = final if isinstance(staged, list) else final[0]
        self._results.pop("out_meta", None)
        return runtime
