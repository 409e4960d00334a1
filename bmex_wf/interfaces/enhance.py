"""Nipype interface running BME-X network E on a preprocessed image."""

from __future__ import annotations

import time

from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits
from nipype.utils.filemanip import fname_presuffix

from ..models.geometry import default_geometry


class _EnhanceInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True,
                   desc="preprocessed image (LPS-closest axes, 0.8/0.75 mm, template units)")
    in_mask = File(exists=True, desc="brain mask on the same grid (tiles are limited to it)")
    model_file = File(exists=True, mandatory=True, desc="enhancement checkpoint (network E)")
    tiling = traits.Enum("fast", "upstream", usedefault=True, desc="tiling scheme")
    geometry = traits.Str(default_geometry("cpu").name, usedefault=True,
                          desc="tile geometry of the fast scheme (models.geometry name); workflows "
                               "pass the GPU geometry when use_gpu is set, so it enters the hash")
    precision = traits.Enum("auto", "fp32", "bf16", "bf16-tail32", "bf16-recon32", "fp16", usedefault=True,
                            desc="numerical precision of the network")
    use_gpu = traits.Bool(False, usedefault=True, nohash=True,
                          desc="run on a CUDA device (scheduled against n_gpu_procs)")
    num_threads = traits.Int(1, usedefault=True, nohash=True, desc="CPU threads for the network")


class _EnhanceOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="enhanced image (network recon) on the input grid")
    out_scores = File(exists=True, desc="4-D map of the 4 stitched class scores (BG, CSF, GM, WM)")
    device = traits.Str(desc="device the network ran on")
    precision = traits.Str(desc="precision the network ran in")
    seconds = traits.Float(desc="wall time of the network inference")
    geometry = traits.Dict(desc="tile geometry and work of the run (run_enhancement's report)")


class Enhance(SimpleInterface):
    """Enhance an image with network E and return its recon and class scores."""

    input_spec = _EnhanceInputSpec
    output_spec = _EnhanceOutputSpec

    def _run_interface(self, runtime):
        import nibabel as nb
        import numpy as np

        from ..image.orientation import from_network_order, to_network_order
        from ..models import load_network
        from ..models.inference import resolve_device, run_enhancement

        img = nb.load(self.inputs.in_file)
        data = to_network_order(np.asarray(img.dataobj, dtype="float32"))
        mask = None
        if self.inputs.in_mask:
            mask = to_network_order(np.asanyarray(nb.load(self.inputs.in_mask).dataobj) > 0)
        device = resolve_device("cuda" if self.inputs.use_gpu else "cpu")
        network = load_network(self.inputs.model_file, "enhance")
        start = time.perf_counter()
        result = run_enhancement(
            data, network, mask=mask, tiling=self.inputs.tiling, geometry=self.inputs.geometry,
            device=device, precision=self.inputs.precision, num_threads=self.inputs.num_threads,
            progress=False,
        )
        recon, scores, report = result.recon, result.scores, result.report
        self._results["seconds"] = time.perf_counter() - start
        self._results["device"] = report["device"]
        self._results["precision"] = report["precision"]
        self._results["geometry"] = {k: v for k, v in report.items() if k not in ("device", "precision")}

        header = img.header.copy()
        header.set_data_dtype("float32")
        out = fname_presuffix(self.inputs.in_file, suffix="_enhanced", newpath=runtime.cwd)
        nb.Nifti1Image(from_network_order(recon), img.affine, header).to_filename(out)
        self._results["out_file"] = out
        scores = np.stack([from_network_order(s) for s in scores], axis=-1)
        out = fname_presuffix(self.inputs.in_file, suffix="_scores", newpath=runtime.cwd)
        nb.Nifti1Image(scores.astype("float32"), img.affine, header).to_filename(out)
        self._results["out_scores"] = out
        return runtime
