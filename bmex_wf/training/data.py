"""Training data: image sources, inference-identical preprocessing, cached volumes, crops.

A *source* is one clean image (BIDS T1w/T2w, an age template, or a row of a
TSV list) with the age template its intensities are matched to, an optional
brain mask and an optional clean target (then the image itself is the
degraded input and no synthetic degradation is applied).

Preprocessing is the inference pipeline's (spec 8.3-8.4, ``init_bmex_wf``):
reorient to LPS, window the intensities to 0..1000, mask (given mask, or the
non-zero voxels of a skull-stripped image), N4 on the masked brain, resample to
0.8 mm (0.75 mm fetal), histogram-match to the age template, network axis
order. Each prepared volume is cropped to its brain bounding box (plus a
margin) and cached as ``.npy`` files, with its tissue labels
(:mod:`bmex_wf.training.targets`), so training only reads crops.
"""

from __future__ import annotations

import csv
import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..labels import tissue_order
from .degradations import degrade, random_kinds
from .targets import tissue_labels

LOGGER = logging.getLogger(__name__)

#: Bump when the preprocessing changes, so that stale cache entries are not reused.
CACHE_VERSION = 2
#: Bump when the tissue-label method changes (labels are cached apart from the volumes).
LABELS_VERSION = 2
#: Voxels kept around the brain bounding box of a cached volume.
BOX_MARGIN = 24
#: How a paired target is brought to the network's output units (see :class:`Source`).
TARGET_SCALES = ("template", "raw")
_TEMPLATE = re.compile(r"^Template-(Fetal|Month\d+)-(T1w|T2w)$")


class TrainingDataError(ValueError):
    """A training source is unusable (the message names the file)."""


@dataclass(frozen=True)
class Source:
    """One training image.

    Attributes
    ----------
    name : str
        Short unique name (file stem).
    image : Path
        Clean image (or the degraded input when ``target`` is given).
    template : str
        Age template the intensities are matched to, e.g. ``Template-Month24-T1w``.
    mask : Path, optional
        Brain mask; default: the non-zero voxels (skull-stripped input).
    target : Path, optional
        Clean target for a real degraded/clean pair, on the image's grid.
    n4 : bool
        Apply N4 (off for the age templates, which are bias-free averages).
    target_scale : str
        ``template``: the target is already in network output units (e.g. the BME-X
        output) and is used as it is; ``raw``: it is preprocessed like the input.
    weight : float
        Relative frequency of this source's crops.
    """

    name: str
    image: Path
    template: str
    mask: Path | None = None
    target: Path | None = None
    n4: bool = True
    target_scale: str = "template"
    weight: float = 1.0

    @property
    def age_group(self) -> str:
        return parse_template(self.template)[0]

    @property
    def contrast(self) -> str:
        return parse_template(self.template)[1]


@dataclass
class Volume:
    """A prepared volume in network order and template units (cropped to the brain)."""

    name: str
    clean: np.ndarray
    mask: np.ndarray
    labels: np.ndarray
    degraded: np.ndarray | None = None
    spacing_mm: float = 0.8
    meta: dict = field(default_factory=dict)
    weight: float = 1.0
    #: What a synthetic crop of a clean volume must give (default: ``clean``), e.g. a
    #: teacher network's output for it (:mod:`bmex_wf.training.teacher`).
    target: np.ndarray | None = None


def parse_template(name: str) -> tuple[str, str]:
    """``Template-Month24-T1w`` -> ``("Month24", "T1w")``."""
    match = _TEMPLATE.match(Path(name).name.removesuffix(".nii.gz"))
    if not match:
        raise TrainingDataError(f"{name!r} is not an age template name like Template-Month24-T1w")
    return match.group(1), match.group(2)


def _stem(path: Path) -> str:
    return re.sub(r"\.nii(\.gz)?$", "", Path(path).name)


# ------------------------------------------------------------------------- sources
def template_sources(templates_dir) -> list[Source]:
    """Every distinct age template of ``templates_dir`` as a clean source (byte-identical copies once)."""
    seen: set[str] = set()
    sources = []
    for path in sorted(Path(templates_dir).glob("Template-*.nii.gz")):
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest in seen:
            LOGGER.info("%s: identical to another template; skipped", path.name)
            continue
        seen.add(digest)
        sources.append(Source(name=_stem(path), image=path, template=_stem(path), n4=False))
    if not sources:
        raise TrainingDataError(f"{templates_dir}: no Template-*.nii.gz files")
    return sources


def bids_sources(bids_dir, subjects=None, exclude_subjects=()) -> list[Source]:
    """T1w/T2w images of a BIDS dataset, each matched to its age template.

    Ages come from the dataset's tables (:func:`bmex_wf.bids.ages.lookup_age`);
    an image without a usable age is skipped with a warning.
    """
    from ..age import AgeError, age_group
    from ..bids.ages import lookup_age
    from ..bids.inputs import find_images

    exclude = {s.removeprefix("sub-") for s in exclude_subjects}
    sources = []
    for item in find_images(bids_dir, participant_label=subjects):
        if item["subject"] in exclude:
            continue
        try:
            info = lookup_age(bids_dir, item["path"])
        except AgeError as exc:
            LOGGER.warning("skipped: %s", exc)
            continue
        group = "Fetal" if info.fetal else age_group(info.months)
        sources.append(Source(name=_stem(item["path"]), image=Path(item["path"]),
                              template=f"Template-{group}-{item['contrast']}"))
    return sources


def list_sources(tsv) -> list[Source]:
    """Sources from a TSV with columns ``image``, ``template`` and optional ``mask``, ``target``,
    ``target_scale`` (``template``, the default: the target is used as it is; ``raw``: it is
    preprocessed like the image) and ``weight`` (relative crop frequency, default 1).

    Relative paths are taken from the TSV's folder.
    """
    tsv = Path(tsv)
    try:
        rows = list(csv.DictReader(tsv.read_text().splitlines(), delimiter="\t"))
    except OSError as exc:
        raise TrainingDataError(f"{tsv}: cannot read ({exc})") from None
    if not rows or not {"image", "template"} <= set(rows[0]):
        raise TrainingDataError(f"{tsv}: needs a header with 'image' and 'template' columns")

    def _path(value):
        value = (value or "").strip()
        return None if not value or value.lower() == "n/a" else (tsv.parent / value).absolute()

    sources = []
    for number, row in enumerate(rows, start=2):
        image = _path(row["image"])
        if image is None or not image.is_file():
            raise TrainingDataError(f"{tsv}, line {number}: image {row['image']!r} not found")
        parse_template(row["template"].strip())
        scale = (row.get("target_scale") or "template").strip()
        if scale not in TARGET_SCALES:
            raise TrainingDataError(f"{tsv}, line {number}: target_scale {scale!r} is not one of {TARGET_SCALES}")
        try:
            weight = float((row.get("weight") or "1").strip())
        except ValueError:
            raise TrainingDataError(f"{tsv}, line {number}: weight {row.get('weight')!r} is not a number") from None
        sources.append(Source(name=_stem(image), image=image, template=row["template"].strip(),
                              mask=_path(row.get("mask")), target=_path(row.get("target")),
                              target_scale=scale, weight=weight))
    return sources


# ---------------------------------------------------------------------- preprocessing
def template_voxel_mm(template: str) -> float:
    """Network voxel size of the model served by ``template`` (``models.json``)."""
    from ..models.registry import enhance_entries

    for entry in enhance_entries():
        if entry.template == template:
            return float(entry.voxel_mm)
    raise TrainingDataError(f"{template!r}: no model entry in models.json uses this template")


def preprocess(image_path, template: str, mask_path=None, n4: bool = True,
               mask_from=None) -> tuple[np.ndarray, np.ndarray, float]:
    """The inference preprocessing of one image, in network order.

    Runs :func:`bmex_wf.preproc.recipe.network_input`, the recipe the workflow's nodes run,
    with the voxel size of the template's model entry.

    Parameters
    ----------
    image_path : path
        Image file.
    template : str
        Age template whose stored landmarks the histogram is matched to.
    mask_path : path, optional
        Brain mask file; default: the non-zero voxels.
    n4 : bool
        Run both N4 passes.
    mask_from : path, optional
        Take the default mask from this image's non-zero voxels instead (paired targets).

    Returns
    -------
    data, mask, spacing_mm
        float32 volume (template units), uint8 mask, voxel size used.
    """
    from ..image.io import load_image, validate_mask
    from ..preproc.recipe import default_mask, network_input

    img = load_image(image_path)
    if mask_path is not None:
        mask = validate_mask(mask_path, img)
    else:
        mask = default_mask(load_image(mask_from)) if mask_from else None
    spacing = template_voxel_mm(template)
    prepared = network_input(img, template, spacing, mask=mask, bias_correction=n4)
    return prepared.data, prepared.mask, spacing


def target_on_grid(target_path, spacing: float) -> np.ndarray:
    """A target already in template units, as it is: reoriented, on the network grid, network order.

    No windowing, N4 or histogram matching (the BME-X output is already in the network's
    output units).
    """
    from ..image.io import load_image
    from ..image.orientation import to_network_order
    from ..preproc.recipe import reorient, to_network_grid

    grid = to_network_grid(reorient(load_image(target_path)), spacing, order=1)
    return to_network_order(np.asanyarray(grid.dataobj, dtype=np.float32)).astype(np.float32)


def _cache_key(source: Source) -> str:
    parts = [str(CACHE_VERSION), source.template, str(source.n4)]
    for path in (source.image, source.mask, source.target):
        if path is not None:
            stat = Path(path).stat()
            parts += [str(Path(path).absolute()), str(stat.st_size), str(int(stat.st_mtime))]
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:12]


def prepare_volume(source: Source, cache_dir) -> Volume:
    """Preprocess ``source`` (or read it from ``cache_dir``) with its tissue labels."""
    folder = Path(cache_dir) / f"{source.name}-{_cache_key(source)}"
    if not (folder / "meta.json").is_file():
        _preprocess_to_cache(source, folder)
    return read_cached_volume(folder, source.contrast, source.age_group, weight=source.weight)


def read_cached_volume(folder, contrast: str | None = None, age_group: str | None = None,
                       weight: float | None = None) -> Volume:
    """A volume from its cache folder (``.npy`` arrays and ``meta.json``): needs no imaging stack."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    arrays = {key: np.load(folder / f"{key}.npy", mmap_mode="r")
              for key in ("clean", "mask", "degraded") if (folder / f"{key}.npy").is_file()}
    labels_file = folder / f"labels-v{LABELS_VERSION}.npy"
    if not labels_file.is_file():
        group, contrast_name = parse_template(meta["template"])
        order = tissue_order(contrast or contrast_name, age_group or group)
        np.save(labels_file, tissue_labels(arrays["clean"], arrays["mask"], order))
    arrays["labels"] = np.load(labels_file, mmap_mode="r")
    weight = meta.get("weight", 1.0) if weight is None else weight
    return Volume(name=meta.get("name", folder.name), spacing_mm=meta["spacing_mm"], meta=meta,
                  weight=float(weight), **arrays)


def _preprocess_to_cache(source: Source, folder: Path) -> None:
    LOGGER.info("preprocessing %s (template %s)", source.image, source.template)
    degraded = None
    if source.target is not None:
        degraded, mask, spacing = preprocess(source.image, source.template, source.mask, source.n4,
                                             mask_from=source.target)
        if source.target_scale == "template":
            clean = target_on_grid(source.target, spacing) * mask
        else:
            clean, _, _ = preprocess(source.target, source.template, source.mask, source.n4,
                                     mask_from=source.target)
        if degraded.shape != clean.shape:
            raise TrainingDataError(f"{source.image}: grid {degraded.shape} differs from its target's "
                                    f"{clean.shape}; resample the pair onto one grid first")
    else:
        clean, mask, spacing = preprocess(source.image, source.template, source.mask, source.n4)
    box = _box(mask, BOX_MARGIN)
    arrays = {"clean": clean[box], "mask": mask[box]}
    if degraded is not None:
        arrays["degraded"] = degraded[box]
    folder.mkdir(parents=True, exist_ok=True)
    for key, value in arrays.items():
        np.save(folder / f"{key}.npy", np.ascontiguousarray(value))
    meta = {"name": source.name, "source": str(source.image), "template": source.template,
            "spacing_mm": spacing, "target": str(source.target) if source.target else None,
            "target_scale": source.target_scale, "weight": source.weight,
            "shape": list(arrays["clean"].shape)}
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def slab_bounds(mask, axis: int, low: float, high: float) -> tuple[int, int]:
    """Start and stop index along ``axis`` of the fractions ``low..high`` of the brain's extent."""
    coords = np.nonzero(np.any(np.asarray(mask) > 0, axis=tuple(a for a in range(3) if a != axis)))[0]
    first, last = int(coords.min()), int(coords.max()) + 1
    return first + round(low * (last - first)), first + round(high * (last - first))


def split_slab(volume: Volume, axis: int, low: float, high: float, gap: int = 8
               ) -> tuple[list[Volume], Volume]:
    """Hold out a contiguous slab of ``volume`` for validation.

    The slab spans the fractions ``low..high`` of the brain's extent along network axis
    ``axis``; the parts before and after it (``gap`` voxels away, so that no training crop
    reaches into it) stay for training when they can hold a crop.
    """
    start, stop = slab_bounds(volume.mask, axis, low, high)

    def part(lo, hi, suffix):
        index = [slice(None)] * 3
        index[axis] = slice(max(lo, 0), min(hi, volume.clean.shape[axis]))
        index = tuple(index)
        return Volume(name=f"{volume.name}-{suffix}", clean=volume.clean[index], mask=volume.mask[index],
                      labels=volume.labels[index], spacing_mm=volume.spacing_mm, meta=volume.meta,
                      degraded=None if volume.degraded is None else volume.degraded[index],
                      weight=volume.weight)

    held = part(start, stop, "val")
    training = [part(0, start - gap, "a"), part(stop + gap, volume.clean.shape[axis], "b")]
    return [p for p in training if p.clean.shape[axis] > 0 and np.any(np.asarray(p.mask))], held


def _box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    coords = np.nonzero(mask)
    if not coords[0].size:
        raise TrainingDataError("empty brain mask after preprocessing")
    return tuple(slice(max(int(c.min()) - margin, 0), min(int(c.max()) + margin + 1, n))
                 for c, n in zip(coords, mask.shape))


# ------------------------------------------------------------------------------ crops
def sample_crop(volume: Volume, size: int, rng: np.random.Generator, margin: int = 0,
                tries: int = 20) -> tuple[slice, ...]:
    """Slices of a random cube of side ``size + 2 * margin`` whose centre lies in the brain.

    The volume is assumed at least that large on every axis (cached volumes are).
    """
    side = size + 2 * margin
    if any(n < side for n in volume.clean.shape):
        raise TrainingDataError(f"{volume.name}: volume {volume.clean.shape} smaller than a {side}³ crop")
    for _ in range(tries):
        start = [int(rng.integers(0, n - side + 1)) for n in volume.clean.shape]
        if volume.mask[tuple(s + side // 2 for s in start)]:
            break
    return tuple(slice(s, s + side) for s in start)


def make_example(volume: Volume, size: int, rng: np.random.Generator, margin: int = 8,
                 kinds=None, flip: bool = True, synthetic: bool = False,
                 synthetic_source: str = "output") -> dict:
    """One training example: degraded input, target and labels of a random crop.

    The target is the volume's ``clean`` image, or its ``target`` (e.g. a teacher's output)
    where it has one.

    ``kinds`` fixes the degradation kinds (default: drawn by
    :func:`~bmex_wf.training.degradations.random_kinds`); real pairs use their stored
    degraded image instead, unless ``synthetic``: then ``synthetic_source`` says what is degraded,
    their target (``"output"``) or their real input (``"input"``, which keeps the input's
    intensity level, so that the network learns one mapping). Arrays are cropped by ``margin`` after degradation, so
    that crop borders do not show TorchIO's edge effects; ``flip`` mirrors left-right
    at random. The input is masked to the brain, as the network's input is at
    inference (artefacts that fall outside the brain never reach it there).
    """
    box = sample_crop(volume, size, rng, margin)
    inner = (slice(margin, margin + size),) * 3
    clean = np.asarray(volume.clean[box], dtype=np.float32)
    target = clean if volume.target is None else np.asarray(volume.target[box], dtype=np.float32)
    if volume.degraded is not None and not synthetic:
        degraded = np.asarray(volume.degraded[box], dtype=np.float32)
        kinds = ("pair",)
    else:
        kinds = random_kinds(rng) if kinds is None else tuple(kinds)
        source = clean
        if volume.degraded is not None and synthetic_source == "input":
            source = np.asarray(volume.degraded[box], dtype=np.float32)
        degraded = degrade(source, kinds, seed=int(rng.integers(2**31)), spacing_mm=volume.spacing_mm)
    mask = np.asarray(volume.mask[box])[inner].astype(bool)
    example = {"input": np.asarray(degraded[inner]) * mask, "target": np.array(target[inner]),
               "labels": np.asarray(volume.labels[box])[inner].astype(np.int64), "mask": mask}
    if flip and rng.random() < 0.5:  # network axis 1 is left-right
        example = {k: np.ascontiguousarray(v[:, ::-1]) for k, v in example.items()}
    example["kinds"] = ",".join(kinds)
    return example


def pick_volume(volumes: list[Volume], rng: np.random.Generator) -> Volume:
    """A random volume, drawn in proportion to the volumes' weights."""
    weights = np.array([v.weight for v in volumes], dtype=np.float64)
    return volumes[int(rng.choice(len(volumes), p=weights / weights.sum()))]


class CropStream(torch.utils.data.IterableDataset):
    """Endless stream of training examples from random volumes (seeded per worker and start step)."""

    def __init__(self, volumes: list[Volume], size: int, seed: int, start_step: int = 0, margin: int = 8,
                 max_kinds: int = 3, p_clean: float = 0.1, p_synthetic_pair: float = 0.0,
                 synthetic_pair_source: str = "output", kinds: Sequence[str] = ()):
        super().__init__()
        if not volumes:
            raise TrainingDataError("no training volumes")
        self.volumes, self.size, self.seed, self.start_step, self.margin = volumes, size, seed, start_step, margin
        self.max_kinds, self.p_clean, self.p_synthetic_pair = max_kinds, p_clean, p_synthetic_pair
        self.synthetic_pair_source, self.kinds = synthetic_pair_source, tuple(kinds)

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        rng = np.random.default_rng([self.seed, self.start_step, worker])
        while True:
            volume = pick_volume(self.volumes, rng)
            synthetic = volume.degraded is not None and rng.random() < self.p_synthetic_pair
            kinds = random_kinds(rng, self.max_kinds, self.p_clean, self.kinds)
            example = make_example(volume, self.size, rng, self.margin, kinds=kinds, synthetic=synthetic,
                                   synthetic_source=self.synthetic_pair_source)
            yield {k: (torch.from_numpy(v) if isinstance(v, np.ndarray) else v) for k, v in example.items()}
