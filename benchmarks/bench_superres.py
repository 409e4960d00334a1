"""Benefit of the network-grid (super-resolution) output on simulated thick slices.

Each held-out skull-stripped image (``sub-0002`` T1w, 0.8 mm; ``sub-0009`` fetal T2w, 0.75 mm)
is cut to its brain's bounding box (or, with ``--region``/``--quick``, a central cube), and
thick slices are simulated on its own grid by averaging slabs of 4 slices along one voxel axis
(the one closest to S by default): 0.8x0.8x3.2 mm for sub-0002 (0.75x0.75x3.0 mm for sub-0009).
Candidates on the network grid of the thick image (0.8 mm; 0.75 mm fetal, in the thick image's
axis order, as the workflow writes its ``res-`` outputs):

* ``sr``: the workflow's network-grid enhanced image (the recipe,
  ``bmex_wf.preproc.recipe.network_input``; ``enhance_volume``; the brain matched to the thick
  input's intensities as the skull add-back does; ``restore_axis_order``), built-in model, and
  official weights found in ``--models-dir`` (``official``);
* ``trilinear`` and ``bspline``: the thick image upsampled onto that grid by trilinear and cubic
  B-spline interpolation.

Every candidate is then brought onto the original grid by the same (linear) interpolation and
compared with the original inside the brain (the original's non-zero voxels whose interpolation
from the network grid takes only voxels of the network's brain mask): scale-free PSNR and SSIM (``fitted_psnr``/``fitted_ssim``: a least-squares
``a*x+b`` fit first), and the mean Dice of CSF, GM and WM between 3-class Atropos
(``atropos_dseg``) on the candidate and on the original.

Usage::

    python benchmarks/bench_superres.py --quick               # 48-voxel central cubes, no N4
    python benchmarks/bench_superres.py [--models-dir DIR] [--region N] [--threads 2]

The last line is ``sr_psnr_db=<> bspline_psnr_db=<> trilinear_psnr_db=<> sr_ssim=<>
bspline_ssim=<> sr_dice=<> bspline_dice=<>`` (means over the images, built-in model).
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
sys.path.insert(0, str(HERE.parent))  # this checkout's bmex_wf, not an installed one
#: Slices averaged into one thick slice.
THICK_FACTOR = 4
#: Voxels kept around the brain's bounding box.
MARGIN_VOX = 6
#: Side (voxels) of the central cube of ``--quick``.
QUICK_REGION = 48
#: Tissue labels scored by Dice.
TISSUE_LABELS = (1, 2, 3)

LOGGER = logging.getLogger("bench_superres")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bids", type=Path, default=SHARED / "test_BIDS", help="BIDS dataset")
    parser.add_argument("--subject", action="append", default=None,
                        help="subject(s) (default: 0002 and 0009)")
    parser.add_argument("--models-dir", type=Path, help="official BME-X weights, scored too")
    parser.add_argument("--axis", choices=("R", "A", "S"), default="S",
                        help="world axis the thick slices are cut across (default: %(default)s)")
    parser.add_argument("--region", type=int, default=0,
                        help="side (voxels) of a central cube to use (0: the brain's bounding box)")
    parser.add_argument("--quick", action="store_true",
                        help=f"small run: central cubes of {QUICK_REGION} voxels, without N4")
    parser.add_argument("--no-n4", action="store_true",
                        help="skip the recipe's N4 passes (implied by --quick: a small cube of "
                        "brain with no background gives N4 nothing but anatomy to fit)")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    return parser.parse_args(argv)


def voxel_axis(img, world: str) -> int:
    """The voxel axis of ``img`` closest to the world axis ``world`` (R, A or S)."""
    pairs = {"R": "RL", "A": "AP", "S": "SI"}[world]
    return next(i for i, code in enumerate(nib.aff2axcodes(img.affine)) if code in pairs)


def crop_box(data: np.ndarray, region: int) -> tuple[slice, ...]:
    """The brain's bounding box (plus :data:`MARGIN_VOX`), or a central cube of ``region``."""
    inside = np.argwhere(data > 0)
    if region > 0:
        centre = np.round(inside.mean(axis=0)).astype(int)
        starts = [int(np.clip(c - region // 2, 0, max(n - region, 0))) for c, n in zip(centre, data.shape)]
        return tuple(slice(s, min(s + region, n)) for s, n in zip(starts, data.shape))
    lo = np.maximum(inside.min(axis=0) - MARGIN_VOX, 0)
    hi = np.minimum(inside.max(axis=0) + MARGIN_VOX + 1, data.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def slab_average(img, axis: int, factor: int = THICK_FACTOR) -> nib.Nifti1Image:
    """Thick slices: the mean of every ``factor`` slices along ``axis``, centred on them."""
    data = np.asanyarray(img.dataobj).astype(np.float32)
    n = data.shape[axis] // factor * factor
    data = np.take(data, range(n), axis=axis)
    shape = list(data.shape)
    shape[axis:axis + 1] = [n // factor, factor]
    thick = data.reshape(shape).mean(axis=axis + 1)
    affine = np.array(img.affine, dtype=float)
    affine[:3, 3] += affine[:3, axis] * (factor - 1) / 2
    affine[:3, axis] *= factor
    return nib.Nifti1Image(thick, affine)


def spline_upsample(img, shape, affine, order: int) -> nib.Nifti1Image:
    """``img`` sampled on the grid (``shape``, ``affine``) by a spline of ``order`` (1 trilinear,
    3 cubic B-spline), in world coordinates."""
    from scipy.ndimage import map_coordinates

    ijk = np.indices(shape, dtype=np.float64).reshape(3, -1)
    source = np.linalg.inv(img.affine) @ np.asarray(affine, dtype=float)
    coords = source[:3, :3] @ ijk + source[:3, 3:]
    data = map_coordinates(np.asanyarray(img.dataobj, dtype=np.float64), coords, order=order,
                           mode="nearest", prefilter=order > 1)
    return nib.Nifti1Image(data.reshape(shape).astype(np.float32), np.asarray(affine, dtype=float))


def network_grid_enhanced(thick, model, threads: int, bias_correction: bool = True
                          ) -> nib.Nifti1Image:
    """The workflow's ``res-`` enhanced image of ``thick``: the recipe, the network, the brain
    matched to the original's intensities (skull add-back; the input is skull-stripped), the
    input's axis order."""
    from bmex_wf.image.header import header_image
    from bmex_wf.image.orientation import from_network_order, restore_axis_order
    from bmex_wf.image.resample import resample_to_reference
    from bmex_wf.models import load_network
    from bmex_wf.models.inference import enhance_volume
    from bmex_wf.postproc.skull import add_skull_back
    from bmex_wf.preproc.recipe import network_input, reorient

    net_in = network_input(thick, model.entry.template, model.entry.voxel_mm,
                           bias_correction=bias_correction, num_threads=threads)
    recon, _ = enhance_volume(net_in.data, load_network(model.path, "enhance"), mask=net_in.mask,
                              device="cpu", precision="fp32", num_threads=threads, progress=False)
    mask = from_network_order(net_in.mask) > 0
    head = np.asanyarray(resample_to_reference(reorient(thick), net_in.image, order=1).dataobj)
    enhanced = add_skull_back(from_network_order(recon) * mask, head, mask)
    grid = header_image(enhanced * mask, net_in.image.affine, net_in.image.header)
    return restore_axis_order(grid, thick)


def atropos_labels(img, mask, contrast: str, group: str) -> np.ndarray:
    from bmex_wf.postproc.volumes import atropos_dseg

    return np.asanyarray(atropos_dseg(img, mask, contrast=contrast, age_group=group).dataobj)


def score(candidate, original, mask, reference_labels, contrast: str, group: str) -> dict:
    """Fitted PSNR/SSIM against the original and Atropos Dice, on the original grid."""
    from bmex_wf.metrics import dice, fitted_psnr, fitted_ssim

    data = np.asanyarray(candidate.dataobj, dtype=np.float32) * mask
    truth = np.asanyarray(original.dataobj, dtype=np.float32)
    mask_img = nib.Nifti1Image(mask.astype(np.uint8), original.affine)
    labels = atropos_labels(nib.Nifti1Image(data, original.affine), mask_img, contrast, group)
    dices = [dice(labels == t, reference_labels == t) for t in TISSUE_LABELS]
    return {"psnr": fitted_psnr(data, truth, mask), "ssim": fitted_ssim(data, truth, mask),
            "dice": float(np.mean(dices)), "dices": dices}


def models_for(group: str, contrast: str, models_dir) -> dict:
    """The built-in model, and the official weights when ``models_dir`` holds them."""
    from bmex_wf.models.registry import (
        ResolvedModel,
        builtin_model_path,
        enhance_entry,
        resolve_enhance_model,
    )

    entry = enhance_entry(group, contrast)
    models = {"sr": ResolvedModel(builtin_model_path(), entry, builtin=True)}
    if models_dir is not None:
        resolved = resolve_enhance_model(group, contrast, models_dir)
        if not resolved.builtin:
            models["official"] = resolved
    return models


def evaluate(source, opts) -> dict:
    """Every candidate's scores for one image."""
    from bmex_wf.image.resample import resample_to_reference
    from bmex_wf.training.data import parse_template

    group, contrast = parse_template(source.template)
    full = nib.load(source.image)
    region = QUICK_REGION if opts.quick and not opts.region else opts.region
    original = full.slicer[crop_box(np.asanyarray(full.dataobj), region)]
    original = nib.Nifti1Image(np.asanyarray(original.dataobj).astype(np.float32), original.affine)
    axis = voxel_axis(original, opts.axis)
    thick = slab_average(original, axis)
    zooms = "x".join(f"{z:.2f}" for z in nib.affines.voxel_sizes(thick.affine))
    LOGGER.info("%s: original %s, thick %s (%s mm), %s %s", source.name, original.shape,
                thick.shape, zooms, group, contrast)
    on_grid = {}
    for name, model in models_for(group, contrast, opts.models_dir).items():
        start = time.perf_counter()
        on_grid[name] = network_grid_enhanced(thick, model, opts.threads,
                                              bias_correction=not (opts.quick or opts.no_n4))
        LOGGER.info("%s: %s network grid %s in %.1f s", source.name, name, on_grid[name].shape,
                    time.perf_counter() - start)
    grid = on_grid["sr"]
    for name, order in (("trilinear", 1), ("bspline", 3)):
        on_grid[name] = spline_upsample(thick, grid.shape, grid.affine, order)
    back = {name: resample_to_reference(img, original, order=1) for name, img in on_grid.items()}
    # scored: the original's brain where the linear interpolation of the network's output
    # takes only voxels of its brain mask (no zeros from outside it or its field of view)
    support = nib.Nifti1Image((np.asanyarray(grid.dataobj) != 0).astype(np.float32), grid.affine)
    brain = np.asanyarray(resample_to_reference(support, original, order=1).dataobj) > 0.999
    mask = (np.asanyarray(original.dataobj) > 0) & brain
    reference = atropos_labels(original, nib.Nifti1Image(mask.astype(np.uint8), original.affine),
                               contrast, group)
    results = {name: score(img, original, mask, reference, contrast, group) for name, img in back.items()}
    for name, res in results.items():
        LOGGER.info("%s %-9s PSNR %.2f dB SSIM %.4f Dice %.4f (CSF %.3f GM %.3f WM %.3f)",
                    source.name, name, res["psnr"], res["ssim"], res["dice"], *res["dices"])
    return {"name": source.name, "zooms": zooms, "voxels": int(mask.sum()), "results": results}


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    logging.getLogger("bmex_wf").setLevel(logging.WARNING)
    opts = parse_args(argv)
    import torch

    torch.set_num_threads(opts.threads)
    from bmex_wf.models.precision import machine_line
    from bmex_wf.training.data import bids_sources

    print(machine_line())
    sources = bids_sources(opts.bids, subjects=opts.subject or ["0002", "0009"])
    if not sources:
        LOGGER.error("no images found in %s", opts.bids)
        return 1
    images = [evaluate(source, opts) for source in sources]
    print(f"{'image':<22}{'thick mm':>16}{'voxels':>9}  {'candidate':<10}{'PSNR dB':>9}{'SSIM':>8}"
          f"{'Dice':>8}{'CSF':>7}{'GM':>7}{'WM':>7}")
    for image in images:
        for name, res in image["results"].items():
            print(f"{image['name']:<22}{image['zooms']:>16}{image['voxels']:>9}  {name:<10}"
                  f"{res['psnr']:>9.2f}{res['ssim']:>8.4f}{res['dice']:>8.4f}"
                  + "".join(f"{d:>7.3f}" for d in res["dices"]))

    def mean(candidate, key):
        return float(np.mean([image["results"][candidate][key] for image in images]))

    print(f"sr_psnr_db={mean('sr', 'psnr'):.3f} bspline_psnr_db={mean('bspline', 'psnr'):.3f} "
          f"trilinear_psnr_db={mean('trilinear', 'psnr'):.3f} sr_ssim={mean('sr', 'ssim'):.4f} "
          f"bspline_ssim={mean('bspline', 'ssim'):.4f} sr_dice={mean('sr', 'dice'):.4f} "
          f"bspline_dice={mean('bspline', 'dice'):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
