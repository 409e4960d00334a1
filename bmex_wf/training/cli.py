"""``bmex-wf train`` / ``bmex-wf-train``: train or fine-tune an enhancement network."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import fields, replace
from pathlib import Path

from ..logging_setup import configure_logging

LOGGER = logging.getLogger("bmex_wf.training")


def get_parser() -> argparse.ArgumentParser:
    """Parser of ``bmex-wf train``."""
    from .loop import AUTOCAST, TrainConfig

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="bmex-wf train",
        description="Train a BME-X-family enhancement network (Network E) on random crops of clean "
        "images, degraded on the fly (motion, ghosting, spikes, noise, blur, thick slices, bias, "
        "gamma) after the same preprocessing as inference. Writes last.pt (resumable), best.pt "
        "(plain state dict with the official key names) and history.jsonl to OUTPUT_DIR.")
    parser.add_argument("output_dir", type=Path, help="folder for checkpoints and logs")
    data = parser.add_argument_group("data")
    data.add_argument("--bids", type=Path, action="append", default=[], metavar="DIR",
                      help="BIDS dataset of clean (ideally skull-stripped) T1w/T2w images; ages from "
                      "its tables pick the template (repeatable)")
    data.add_argument("--images-list", type=Path, action="append", default=[], metavar="TSV",
                      help="TSV with columns image, template and optional mask, target (repeatable)")
    data.add_argument("--templates-dir", type=Path, metavar="DIR",
                      help="also train on the BME-X age templates of this folder as clean images")
    data.add_argument("--val-subject", action="append", default=[], metavar="LABEL",
                      help="BIDS subject held out for validation (repeatable)")
    data.add_argument("--val-list", type=Path, action="append", default=[], metavar="TSV",
                      help="validation images, same columns as --images-list (repeatable)")
    data.add_argument("--val-slab", type=_slab, metavar="AXIS:LOW:HIGH",
                      help="hold out a contiguous slab of every real pair of --images-list for "
                      "validation: network axis 0-2 and the fractions of the brain's extent along it, "
                      "e.g. 2:0.4:0.65 (the rest of the pair trains)")
    data.add_argument("--volumes", type=Path, action="append", default=[], metavar="DIR",
                      help="a preprocessed volume folder of the cache (meta.json + .npy) to train on "
                      "as it is, with no imaging stack needed (repeatable)")
    data.add_argument("--val-volumes", type=Path, action="append", default=[], metavar="DIR",
                      help="a preprocessed volume folder to validate on (repeatable)")
    data.add_argument("--prepare-only", action="store_true",
                      help="preprocess the images into the cache and stop (the folders can then be "
                      "given to --volumes on another machine)")
    data.add_argument("--teacher", type=Path, metavar="MODEL",
                      help="targets of the clean images' degraded crops: this network's output for "
                      "the clean image (self-distillation) instead of the clean image; real pairs "
                      "keep their own target")
    data.add_argument("--cache-dir", type=Path, help="where preprocessed volumes are cached "
                      "(default: OUTPUT_DIR/cache)")
    model = parser.add_argument_group("training")
    for name, help_text in (
        ("width", "network base width F (multiple of 8; official 64)"),
        ("crop", "training crop side in voxels (multiple of 8)"),
        ("batch", "crops per optimizer step"),
        ("steps", "total optimizer steps"),
        ("lr", "Adam learning rate (cosine decay to --min-lr)"),
        ("min_lr", "final learning rate"),
        ("recon_weight", "weight of the reconstruction loss"),
        ("seg_weight", "weight of the tissue cross-entropy"),
        ("max_kinds", "most degradation kinds combined on one crop"),
        ("p_clean", "probability that a crop is left undegraded"),
        ("p_synthetic_pair", "probability that a crop of a real pair degrades its target "
         + "synthetically instead of using the pair's input"),
        ("seed", "random seed"),
        ("val_every", "steps between validations"),
        ("val_crop", "validation crop side"),
        ("val_per_kind", "validation crops per held-out volume and degradation kind"),
        ("calibration_batches", "batches that set the frozen BN statistics before training"),
        ("scalar_lr_scale", "learning-rate factor of biases and BN scales when starting from "
         + "the identity network"),
        ("ema_decay", "decay of the exponential moving average of the weights that is validated "
         + "and exported (0: none)"),
        ("checkpoint_minutes", "minutes between resumable checkpoints"),
        ("max_minutes", "stop after this many minutes (0: no limit)"),
        ("stop_step", "stop at this step, keeping the learning-rate schedule of --steps (0: at --steps)"),
        ("num_threads", "CPU threads for PyTorch"),
        ("workers", "data-loader processes preparing degraded crops"),
    ):
        default = getattr(defaults, name)
        model.add_argument("--" + name.replace("_", "-"), type=type(default), default=default,
                           help=f"{help_text} (default: {default})")
    model.add_argument("--kinds", nargs="+", default=list(defaults.kinds), metavar="KIND",
                       help="degradation kinds training crops draw from: motion, ghosting, spike, "
                       "noise, blur, anisotropy, bias, gamma (default: all)")
    model.add_argument("--recon-loss", choices=("l1", "l2"), default=defaults.recon_loss,
                       help=f"reconstruction loss (default: {defaults.recon_loss})")
    model.add_argument("--synthetic-pair-source", choices=("output", "input"),
                       default=defaults.synthetic_pair_source,
                       help="what a synthetic crop of a real pair degrades: its target (output) or "
                       "its real input, which keeps the input's intensity level (default: "
                       f"{defaults.synthetic_pair_source})")
    model.add_argument("--recon-region", choices=("brain", "crop"), default=defaults.recon_region,
                       help="voxels the reconstruction loss averages over: the brain mask (what "
                       "inference keeps) or the whole crop (default: brain)")
    model.add_argument("--autocast", choices=tuple(AUTOCAST), default=defaults.autocast,
                       help="mixed precision of the forward pass (bf16 is fast on CPUs with native "
                       "bfloat16: lscpu shows avx512_bf16 or amx_bf16; default: none)")
    model.add_argument("--no-freeze-bn", dest="freeze_bn", action="store_false",
                       help="update BN statistics per batch instead of calibrating them once and "
                       "starting from the identity network")
    model.add_argument("--device", default=defaults.device, help="auto, cpu, cuda or cuda:N (default: auto)")
    model.add_argument("--stop-at-best-of", type=Path, metavar="RUN_DIR",
                       help="stop at the step where the validated run RUN_DIR scored best, on the "
                       "same --steps schedule: a final fit on all the data (e.g. without --val-slab) "
                       "that keeps the length the validation chose")
    model.add_argument("--no-resume", action="store_true", help="start afresh even if OUTPUT_DIR/last.pt exists")
    model.add_argument("--no-progress", action="store_true", help="no progress bar")
    model.add_argument("--export", type=Path, metavar="FILE",
                       help="at the end, write the best model here (official key names, float32)")
    model.add_argument("--export-half", action="store_true",
                       help="store the exported model as float16 (half the size, less exact)")
    return parser


def _slab(text: str) -> tuple[int, float, float]:
    try:
        axis, low, high = text.split(":")
        slab = int(axis), float(low), float(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not AXIS:LOW:HIGH, e.g. 2:0.4:0.65") from None
    if slab[0] not in (0, 1, 2) or not 0.0 <= slab[1] < slab[2] <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: axis must be 0-2 and 0 <= LOW < HIGH <= 1")
    return slab


def main(argv=None) -> int:
    """Run ``bmex-wf train``; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    configure_logging()
    opts = get_parser().parse_args(argv)
    from .data import (
        TrainingDataError,
        bids_sources,
        list_sources,
        prepare_volume,
        read_cached_volume,
        split_slab,
        template_sources,
    )
    from .loop import TrainConfig, TrainingError, best_validation_step, export_model, train

    config = TrainConfig(**{f.name: getattr(opts, f.name) for f in fields(TrainConfig)})
    try:
        from .degradations import check_kinds

        config = replace(config, kinds=check_kinds(config.kinds))
        if opts.teacher and not opts.teacher.is_file():
            raise TrainingDataError(f"{opts.teacher}: no such teacher model file")
        if opts.stop_at_best_of:
            best_step, schedule = best_validation_step(opts.stop_at_best_of)
            if schedule != config.steps:
                raise TrainingError(f"{opts.stop_at_best_of}: its schedule has {schedule} steps, "
                                    f"not --steps {config.steps}; give --steps {schedule}")
            config = replace(config, stop_step=best_step)
            LOGGER.info("stopping at step %d of %d, the best validation step of %s", best_step,
                        schedule, opts.stop_at_best_of)
        if config.width % 8 or config.width < 8 or config.crop % 8 or config.val_crop % 8:
            raise TrainingError("--width, --crop and --val-crop must be positive multiples of 8")
        train_sources, val_sources = [], []
        for bids_dir in opts.bids:
            train_sources += bids_sources(bids_dir, exclude_subjects=opts.val_subject)
            if opts.val_subject:
                val_sources += bids_sources(bids_dir, subjects=opts.val_subject)
        for tsv in opts.images_list:
            train_sources += list_sources(tsv)
        for tsv in opts.val_list:
            val_sources += list_sources(tsv)
        if opts.templates_dir:
            train_sources += template_sources(opts.templates_dir)
        if not train_sources and not opts.volumes:
            raise TrainingDataError("no training images: give --bids, --images-list, --templates-dir "
                                    "or --volumes")
        cache = opts.cache_dir or opts.output_dir / "cache"
        LOGGER.info("%d training and %d validation images", len(train_sources) + len(opts.volumes),
                    len(val_sources) + len(opts.val_volumes))
        train_volumes = [prepare_volume(s, cache) for s in train_sources]
        val_volumes = [prepare_volume(s, cache) for s in val_sources]
        if opts.prepare_only:
            LOGGER.info("volumes prepared in %s", cache)
            return 0
        train_volumes += [read_cached_volume(folder) for folder in opts.volumes]
        if opts.teacher:
            from .teacher import with_teacher_targets

            train_volumes = with_teacher_targets(train_volumes, opts.teacher, cache, config.num_threads)
        val_volumes += [read_cached_volume(folder) for folder in opts.val_volumes]
        if opts.val_slab:
            kept = []
            for volume in train_volumes:
                if volume.degraded is None:
                    kept.append(volume)
                    continue
                parts, held = split_slab(volume, *opts.val_slab)
                kept += parts
                val_volumes.append(held)
                LOGGER.info("%s: slab %s held out for validation (%s voxels)", volume.name,
                            opts.val_slab, held.clean.shape)
            train_volumes = kept
        result = train(train_volumes, val_volumes, config, opts.output_dir, resume=not opts.no_resume,
                       progress=not opts.no_progress)
        if opts.export:
            LOGGER.info("exported %s", export_model(result["best"], opts.export, half=opts.export_half))
    except (TrainingError, TrainingDataError, ValueError, OSError) as exc:
        LOGGER.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
