"""A local TemplateFlow home built from nilearn's bundled MNI152 2009a symmetric template.

nilearn ships the ICBM 2009a nonlinear symmetric T1w, GM and WM maps at 1 mm; TemplateFlow
names that template ``MNI152NLin2009aSym``. :func:`build_templateflow_home` lays them out as
TemplateFlow does (``tpl-MNI152NLin2009aSym/tpl-MNI152NLin2009aSym_res-1_T1w.nii.gz``, ...);
:func:`use_templateflow_home` points the real ``templateflow.api`` client at it.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nb
import numpy as np

TEMPLATE = "MNI152NLin2009aSym"
_NILEARN = "mni_icbm152_{}_tal_nlin_sym_09a_converted.nii.gz"


def _nilearn_file(kind: str) -> Path:
    from importlib import resources

    return Path(str(resources.files("nilearn.datasets").joinpath("data", _NILEARN.format(kind))))


def _save(data, affine, path: Path, dtype) -> None:
    img = nb.Nifti1Image(np.asarray(data, dtype=dtype), affine)
    img.header.set_qform(affine, 1)
    img.header.set_sform(affine, 4)
    img.to_filename(path)


def build_templateflow_home(root: Path, *, empty: tuple[str, ...] = ()) -> Path:
    """Write ``tpl-MNI152NLin2009aSym`` under ``root`` and return ``root``.

    Files: ``_res-1_T1w``, ``_res-1_desc-brain_mask`` (nilearn's MNI152 brain mask),
    ``_res-1_label-GM_probseg``, ``_res-1_label-WM_probseg`` and ``template_description.json``.
    Suffixes named in ``empty`` (e.g. ``"T1w"``) are written as 0-byte files, as an offline
    TemplateFlow skeleton holds them.
    """
    from nilearn.datasets import load_mni152_brain_mask

    folder = Path(root) / f"tpl-{TEMPLATE}"
    folder.mkdir(parents=True, exist_ok=True)
    t1 = nb.load(_nilearn_file("t1"))
    affine = t1.affine
    outputs = {
        "T1w": (np.asanyarray(t1.dataobj), "uint8"),
        "desc-brain_mask": (np.asanyarray(load_mni152_brain_mask(resolution=1).dataobj) > 0,
                            "uint8"),
        "label-GM_probseg": (nb.load(_nilearn_file("gm")).get_fdata() / 255.0, "float32"),
        "label-WM_probseg": (nb.load(_nilearn_file("wm")).get_fdata() / 255.0, "float32"),
    }
    for suffix, (data, dtype) in outputs.items():
        path = folder / f"tpl-{TEMPLATE}_res-1_{suffix}.nii.gz"
        if suffix in empty:
            path.write_bytes(b"")
        else:
            _save(data, affine, path, dtype)
    description = {
        "Identifier": TEMPLATE, "Name": "ICBM 152 Nonlinear Symmetrical template version 2009a",
        "TemplateFlowVersion": "1.0.0", "BIDSVersion": "1.1.0",
        "ReferencesAndLinks": ["https://doi.org/10.1016/j.neuroimage.2010.07.033"],
        "res": {"1": {"origin": affine[:3, 3].tolist(), "shape": list(t1.shape),
                      "zooms": [1.0, 1.0, 1.0]}},
    }
    (folder / "template_description.json").write_text(json.dumps(description, indent=2))
    (Path(root) / "dataset_description.json").write_text(
        json.dumps({"Name": "TemplateFlow (local test copy)", "BIDSVersion": "1.1.0"}))
    return Path(root)


def use_templateflow_home(monkeypatch, root: Path, *, s3_root: str = "http://127.0.0.1:9"):
    """Point ``templateflow.api`` at ``root`` for one test, as if started with
    ``TEMPLATEFLOW_HOME=root``; downloads go to ``s3_root`` (by default a closed local port:
    the machine is offline for TemplateFlow)."""
    from templateflow import api, conf
    from templateflow.client import TemplateFlowClient
    from templateflow.conf.cache import CacheConfig, TemplateFlowCache

    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(root))
    cache = TemplateFlowCache(CacheConfig(s3_root=s3_root, timeout=2))
    monkeypatch.setattr(conf, "_cache", cache)
    monkeypatch.setattr(api, "_client", TemplateFlowClient(cache=cache))
    return cache
