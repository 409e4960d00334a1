"""Teacher targets: a trained network's output for each clean training volume.

With a teacher, a clean scan's degraded crops learn to give what the teacher gives the clean
scan itself (self-distillation) instead of the clean scan: the style a real pair taught the
teacher stays the one target, while the degraded inputs teach robustness. Outputs are cached
as ``.npy`` files under ``cache_dir/teacher-<first 12 digits of the weights' SHA-256>/``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..models.checkpoints import load_network
from ..models.inference import enhance_volume
from .data import Volume

LOGGER = logging.getLogger("bmex_wf.training")


def teacher_output(volume: Volume, network, num_threads: int | None = None) -> np.ndarray:
    """The network's enhanced brain for the volume's clean image (float32, masked, fp32)."""
    mask = np.asarray(volume.mask, dtype=bool)
    clean = np.asarray(volume.clean, dtype=np.float32) * mask
    recon, _ = enhance_volume(clean, network, mask=mask, device="cpu", precision="fp32",
                              num_threads=num_threads, progress=False)
    return (recon * mask).astype(np.float32)


def with_teacher_targets(volumes: list[Volume], model_path, cache_dir,
                         num_threads: int | None = None) -> list[Volume]:
    """``volumes`` with ``target`` set to the teacher's output for every clean volume.

    Real pairs (volumes with a ``degraded`` input) keep their own target.
    """
    network = load_network(model_path, "enhance")
    folder = Path(cache_dir) / f"teacher-{network.weights_sha256[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    result = []
    for volume in volumes:
        if volume.degraded is not None:
            result.append(volume)
            continue
        path = folder / f"{volume.name}-{'x'.join(map(str, volume.clean.shape))}.npy"
        if not path.is_file():
            LOGGER.info("teacher output for %s", volume.name)
            partial = path.with_suffix(".partial.npy")
            np.save(partial, teacher_output(volume, network, num_threads))
            os.replace(partial, path)
        result.append(replace(volume, target=np.load(path, mmap_mode="r")))
    return result
