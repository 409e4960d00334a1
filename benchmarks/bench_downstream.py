"""Downstream benefit of enhancement: registration to a template and tissue volumes.

For every held-out image (preprocessed exactly as for inference by
``bmex_wf.training.data``: window, N4, 0.8/0.75 mm, histogram matching to its age
template) and every degradation of ``bmex_wf.training.degradations`` asked for, the
whole clean brain is degraded (fresh seed, histogram-matched back, as in
``eval_builtin.py``) and enhanced with the model the registry picks for the image
(``enhance_volume``, fast tiling). Then, for the degraded and the enhanced brain:

* tissue volumes: 3-class Atropos (``bmex_wf.postproc.volumes.atropos_dseg``) of the degraded
  and of the enhanced brain against Atropos of the clean brain: mean absolute volume error
  over CSF, GM and WM (% of the clean volume) and the voxel Dice of the label maps;
* registration (not for fetal images: no fetal template): rigid + affine + SyN
  (``--transform``) to the template brain at 2 mm with the ``quick`` schedule
  (``bmex_wf.spaces.registration.register_to_template``, seed 0). The clean brain's Atropos
  labels are warped with each image's transforms and compared, in template space, with the
  same labels warped by the clean brain's own registration (mean Dice over CSF/GM/WM), and
  so is the clean brain itself (Pearson correlation inside the template brain mask). The
  clean brain registered again with seed 1 gives the registration's own noise floor (the
  row ``none (clean, seed 1)``): differences smaller than its distance from 1 are noise.
  ``tpl_dice`` compares the same warped labels with the template's own tissue labels
  (probability maps > 0.5; GM and WM for MNI152NLin2009aSym), an absolute accuracy.

The arrays carry an axis-aligned LPS affine at their voxel size (the scanner's obliquity
is dropped; the rigid stage absorbs it); every condition of an image shares that grid.

Usage::

    python benchmarks/bench_downstream.py [--quick] [--subject 0002 --subject 0009]
        [--kinds motion,noise,anisotropy] [--cache-dir DIR] [--threads 2]
        [--template MNI152NLin2009aSym] [--templateflow-home DIR] [--transform SyN]

``--quick``: sub-0002 only, one kind (noise). Templates come through TemplateFlow
(``TEMPLATEFLOW_HOME``); when the home lacks ``MNI152NLin2009aSym`` it is built from
nilearn's bundled files (``tests/templateflow_local.py``). The last line is
``reg_dice_gain=<mean Dice(enhanced) - Dice(degraded)>
volume_error_reduction=<mean error(degraded) - error(enhanced), percentage points>``;
positive numbers mean enhancement helped.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
#: Seeds far from the training streams (and from eval_builtin's).
BENCH_SEED = 20_261_126
DEFAULT_KINDS = ("motion", "noise", "anisotropy")
LOCAL_TEMPLATE = "MNI152NLin2009aSym"
#: Voxel size (mm) of the registration and of the template-space comparison grid.
REG_SPACING_MM = 2.0

LOGGER = logging.getLogger("bench_downstream")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="sub-0002 only, one degradation (noise): a few minutes")
    parser.add_argument("--bids", type=Path, default=SHARED / "test_BIDS", help="BIDS dataset")
    parser.add_argument("--subject", action="append", default=None,
                        help="held-out subject(s) (default: 0002 and 0009, never trained on)")
    parser.add_argument("--kinds", default=None,
                        help="comma-separated degradations; join kinds with '+' to combine "
                        f"them (default: {','.join(DEFAULT_KINDS)})")
    parser.add_argument("--models-dir", type=Path, default=None,
                        help="models folder searched first (default: the registry's search)")
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/bmex-eval-cache"),
                        help="cache of preprocessed volumes (shared with eval_builtin.py)")
    parser.add_argument("--template", default=LOCAL_TEMPLATE,
                        help="TemplateFlow template to register to (default: %(default)s)")
    parser.add_argument("--templateflow-home", type=Path, default=None,
                        help="TemplateFlow home (default: $TEMPLATEFLOW_HOME, else a local "
                        "copy of MNI152NLin2009aSym under /tmp)")
    parser.add_argument("--transform", choices=("Rigid", "Affine", "SyN"), default="SyN",
                        help="registration stages (default: rigid + affine + SyN)")
    parser.add_argument("--atropos-iterations", type=int, default=5, help="Atropos EM iterations")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (torch and ITK)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="folder for transforms (default: a temporary folder)")
    opts = parser.parse_args(argv)
    if opts.subject is None:
        opts.subject = ["0002"] if opts.quick else ["0002", "0009"]
    text = opts.kinds or ("noise" if opts.quick else ",".join(DEFAULT_KINDS))
    opts.kinds = [tuple(k.split("+")) for k in text.split(",") if k]
    return opts


# --------------------------------------------------------------------------- template
def template_home(opts) -> Path:
    """The TemplateFlow home to use; a local MNI152NLin2009aSym copy is built when missing."""
    home = opts.templateflow_home or Path(os.environ.get(
        "TEMPLATEFLOW_HOME", tempfile.gettempdir() + "/bmex-bench-templateflow"))
    if opts.template == LOCAL_TEMPLATE and not (home / f"tpl-{LOCAL_TEMPLATE}").is_dir():
        spec = importlib.util.spec_from_file_location(
            "templateflow_local", HERE.parent / "tests" / "templateflow_local.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        module.build_templateflow_home(home)
        LOGGER.info("built a local TemplateFlow home with %s in %s", LOCAL_TEMPLATE, home)
    return home


@dataclass
class Template:
    """A template brain (1 mm), its mask, and the 2 mm grid where registrations are compared."""

    brain: object
    mask: object
    grid: object
    grid_mask: np.ndarray
    contrast: str
    labels: np.ndarray  # template tissue labels (1 CSF, 2 GM, 3 WM) on the 2 mm grid
    tissues: tuple  # labels the template has probability maps for


@cache
def load_template(name: str, contrast: str) -> Template:
    """The template through TemplateFlow (``contrast`` if it has it), brain-masked."""
    import nibabel as nib
    from nibabel.processing import resample_from_to

    from bmex_wf.spaces.templateflow import fetch_template, parse_output_space

    files = fetch_template(parse_output_space(name), contrast)
    image, mask = nib.load(files.image), nib.load(files.mask)
    inside = np.asanyarray(mask.dataobj) > 0
    brain = nib.Nifti1Image(image.get_fdata(dtype=np.float32) * inside, image.affine)
    mask = nib.Nifti1Image(inside.astype(np.uint8), image.affine)
    zooms = np.array(image.header.get_zooms()[:3])
    shape = np.ceil(np.array(image.shape) * zooms / REG_SPACING_MM).astype(int)
    affine = image.affine.copy()
    affine[:3, :3] = affine[:3, :3] / zooms * REG_SPACING_MM
    grid = nib.Nifti1Image(np.zeros(tuple(shape), np.float32), affine)
    grid_mask = np.asanyarray(resample_from_to(mask, grid, order=0).dataobj) > 0
    tissues = tuple(label for label, name in enumerate(("CSF", "GM", "WM"), start=1)
                    if name in files.probsegs)
    probs = np.stack([np.zeros(grid.shape, np.float32)] + [
        np.asanyarray(resample_from_to(nib.load(files.probsegs[name]), grid, order=1).dataobj)
        if name in files.probsegs else np.zeros(grid.shape, np.float32)
        for name in ("CSF", "GM", "WM")])
    labels = np.where(probs.max(axis=0) >= 0.5, probs.argmax(axis=0), 0) * grid_mask
    return Template(brain, mask, grid, grid_mask, files.contrast, labels, tissues)


# --------------------------------------------------------------------------- measures
def dice(a: np.ndarray, b: np.ndarray, labels=(1, 2, 3)) -> float:
    """Mean Dice over ``labels`` of two label maps on one grid."""
    scores = []
    for label in labels:
        x, y = a == label, b == label
        total = x.sum() + y.sum()
        scores.append(2.0 * np.logical_and(x, y).sum() / total if total else 1.0)
    return float(np.mean(scores))


def volume_error(volumes: dict, reference: dict) -> float:
    """Mean absolute CSF/GM/WM volume error, % of the reference volumes."""
    from bmex_wf.postproc.volumes import TISSUES

    return float(np.mean([abs(volumes[t] - reference[t]) / reference[t] * 100
                          for t in TISSUES if reference[t] > 0]))


def correlation(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    return float(np.corrcoef(a[mask], b[mask])[0, 1])


class Registrar:
    """Registers brains of one image to the template and compares them with the clean one."""

    def __init__(self, template: Template, work: Path, *, transform: str, threads: int,
                 syn_metric: str):
        self.brain, self.mask, self.grid = template.brain, template.mask, template.grid
        self.grid_mask, self.template = template.grid_mask, template
        self.work, self.transform, self.threads = work, transform, threads
        self.syn_metric = syn_metric
        self.reference = None

    def _register(self, img, mask, name: str, seed: int = 0):
        from bmex_wf.spaces.registration import register_to_template

        start = time.perf_counter()
        result = register_to_template(img, self.brain, out_dir=self.work / name.replace(" ", "_"),
                                      moving_mask=mask, fixed_mask=self.mask,
                                      transform=self.transform, spacing_mm=REG_SPACING_MM,
                                      iterations="quick", seed=seed, num_threads=self.threads,
                                      syn_metric=self.syn_metric)
        LOGGER.info("%s: registered in %.0f s", name, time.perf_counter() - start)
        return result.forward_transforms

    def _warp(self, clean_img, clean_dseg, transforms):
        from bmex_wf.spaces.registration import apply_transforms

        labels = apply_transforms(clean_dseg, self.grid, transforms, interpolation="genericLabel",
                                  num_threads=self.threads)
        image = apply_transforms(clean_img, self.grid, transforms, num_threads=self.threads)
        return np.asanyarray(labels.dataobj), np.asanyarray(image.dataobj)

    def template_dice(self, labels: np.ndarray) -> float:
        """Mean Dice of warped labels with the template's own tissue labels (its probsegs)."""
        return dice(labels, self.template.labels, self.template.tissues)

    def set_clean(self, clean_img, clean_dseg, mask, name: str) -> float:
        """Register the clean brain (the reference); returns its template Dice."""
        self.clean_img, self.clean_dseg = clean_img, clean_dseg
        self.reference = self._warp(clean_img, clean_dseg, self._register(clean_img, mask, name))
        return self.template_dice(self.reference[0])

    def compare(self, img, mask, name: str, seed: int = 0) -> tuple[float, float, float]:
        """Dice and correlation with the clean registration, and template Dice, of the clean
        brain warped by ``img``'s registration.

        The clean brain itself with another ``seed`` gives the registration's own noise floor.
        """
        labels, image = self._warp(self.clean_img, self.clean_dseg,
                                   self._register(img, mask, name, seed))
        ref_labels, ref_image = self.reference
        return (dice(labels, ref_labels), correlation(image, ref_image, self.grid_mask),
                self.template_dice(labels))


# --------------------------------------------------------------------------- main loop
def _image(lps: np.ndarray, spacing: float):
    import nibabel as nib

    return nib.Nifti1Image(lps, np.diag([-spacing, -spacing, spacing, 1.0]))


def run_image(source, opts, work: Path) -> list[dict]:
    """All kinds of one held-out image: one result row per kind."""
    from bmex_wf.image.orientation import from_network_order
    from bmex_wf.models import load_network
    from bmex_wf.models.inference import enhance_volume
    from bmex_wf.models.registry import resolve_enhance_model
    from bmex_wf.postproc.volumes import atropos_dseg, tissue_volumes
    from bmex_wf.spaces.templateflow import is_fetal_template
    from bmex_wf.training.data import prepare_volume
    from bmex_wf.training.degradations import degrade

    model = resolve_enhance_model(source.age_group, source.contrast,
                                  str(opts.models_dir) if opts.models_dir else None)
    network = load_network(model.path, "enhance")
    LOGGER.info("%s: model %s (%s, width %d)", source.name, model.path.name,
                "built-in" if model.builtin else "official", network.width)
    vol = prepare_volume(source, opts.cache_dir)
    clean, mask = np.asarray(vol.clean, np.float32), np.asarray(vol.mask) > 0
    spacing = vol.spacing_mm
    mask_img = _image(from_network_order(mask.astype(np.uint8)), spacing)

    def segment(network_order: np.ndarray, name: str):
        start = time.perf_counter()
        seg = atropos_dseg(_image(from_network_order(network_order), spacing), mask_img,
                           contrast=source.contrast, iterations=opts.atropos_iterations,
                           age_group=source.age_group)
        LOGGER.info("%s: Atropos in %.0f s", name, time.perf_counter() - start)
        return seg

    clean_img = _image(from_network_order(clean), spacing)
    clean_seg = segment(clean, f"{source.name} clean")
    clean_volumes = tissue_volumes(clean_seg)
    registrar = None
    if source.age_group == "Fetal" and not is_fetal_template(opts.template):
        LOGGER.warning("%s: fetal image, registration skipped: %s is not a fetal template "
                       "(no fetal template available); tissue volumes only", source.name,
                       opts.template)
    else:
        template = load_template(opts.template, source.contrast)
        metric = "CC" if template.contrast == source.contrast else "MI"
        registrar = Registrar(template, work / source.name, transform=opts.transform,
                              threads=opts.threads, syn_metric=metric)
        clean_tpl_dice = registrar.set_clean(clean_img, clean_seg, mask_img,
                                             f"{source.name} clean")
        floor = registrar.compare(clean_img, mask_img, f"{source.name} clean seed 1", seed=1)
        LOGGER.info("%s: registration noise floor (clean image, seed 1 vs 0): Dice %.4f, "
                    "correlation %.4f", source.name, *floor[:2])

    rows = []
    if registrar is not None:
        rows.append({"image": source.name, "kind": "none (clean)", "tpl_dice_deg": clean_tpl_dice})
        rows.append({"image": source.name, "kind": "none (clean, seed 1)",
                     "reg_dice_deg": floor[0], "corr_deg": floor[1], "tpl_dice_deg": floor[2]})
    for kinds in opts.kinds:
        kind = "+".join(kinds)
        # One seed per kind (not per position), so --quick and full runs degrade alike.
        seed = BENCH_SEED + zlib.crc32(kind.encode()) % 100_000
        degraded = degrade(clean, kinds, seed=seed, spacing_mm=spacing) * mask
        start = time.perf_counter()
        enhanced, _ = enhance_volume(degraded, network, mask=mask, device="cpu", precision="fp32",
                                     num_threads=opts.threads, progress=False)
        LOGGER.info("%s %s: enhanced in %.0f s", source.name, kind, time.perf_counter() - start)
        enhanced = enhanced * mask
        row = {"image": source.name, "kind": kind}
        for tag, data in (("deg", degraded), ("enh", enhanced)):
            seg = segment(data, f"{source.name} {kind} {tag}")
            row[f"vol_err_{tag}"] = volume_error(tissue_volumes(seg), clean_volumes)
            row[f"seg_dice_{tag}"] = dice(np.asanyarray(seg.dataobj),
                                          np.asanyarray(clean_seg.dataobj))
            if registrar is not None:
                row[f"reg_dice_{tag}"], row[f"corr_{tag}"], row[f"tpl_dice_{tag}"] = \
                    registrar.compare(
                        _image(from_network_order(data), spacing), mask_img,
                        f"{source.name} {kind} {tag}")
        LOGGER.info("%s", row)
        rows.append(row)
    return rows


def _fmt(value, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_table(rows: list[dict]) -> None:
    columns = (("vol_err_deg", 2), ("vol_err_enh", 2), ("seg_dice_deg", 4), ("seg_dice_enh", 4),
               ("reg_dice_deg", 4), ("reg_dice_enh", 4), ("corr_deg", 4), ("corr_enh", 4),
               ("tpl_dice_deg", 4), ("tpl_dice_enh", 4))
    print(f"{'image':<22}{'kind':<24}" + "".join(f"{name:>13}" for name, _ in columns))
    for row in rows:
        print(f"{row['image']:<22}{row['kind']:<24}"
              + "".join(f"{_fmt(row.get(name), digits):>13}" for name, digits in columns))
    print("vol_err: mean |volume - clean volume| over CSF/GM/WM, % (Atropos); seg_dice: Atropos "
          "labels vs clean Atropos labels; reg_dice / corr: clean labels / image warped by the "
          "image's registration vs by the clean image's registration (template space, 2 mm); "
          "tpl_dice: the same warped clean labels vs the template's own tissue labels (its "
          "probsegs > 0.5); kind 'none (clean, seed 1)': the clean image registered again "
          "with another seed, the registration's own noise floor.")


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    logging.getLogger("bmex_wf").setLevel(logging.WARNING)
    opts = parse_args(argv)
    os.environ["TEMPLATEFLOW_HOME"] = str(template_home(opts))  # before templateflow loads
    # ITK reads its thread count once per process, before the first ANTs call.
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(opts.threads)
    from bmex_wf.training.data import bids_sources
    from bmex_wf.training.degradations import check_kinds

    for kinds in opts.kinds:
        check_kinds(kinds)
    sources = bids_sources(opts.bids, subjects=opts.subject)
    if not sources:
        LOGGER.error("no held-out images found for subjects %s in %s", opts.subject, opts.bids)
        return 1
    start = time.perf_counter()
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_downstream") as tmp:
        work = opts.work_dir or Path(tmp)
        for source in sources:
            rows += run_image(source, opts, work)
    print_table(rows)
    reg = [r["reg_dice_enh"] - r["reg_dice_deg"] for r in rows if "reg_dice_enh" in r]
    vol = [r["vol_err_deg"] - r["vol_err_enh"] for r in rows if "vol_err_enh" in r]
    LOGGER.info("total %.1f min on %d threads", (time.perf_counter() - start) / 60, opts.threads)
    reg_gain = float(np.mean(reg)) if reg else float("nan")
    print(f"reg_dice_gain={reg_gain:.4f} volume_error_reduction={float(np.mean(vol)):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
