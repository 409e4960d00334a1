"""Argument parsers of ``bmex-wf`` (BIDS App) and ``bmex-wf enhance`` (one image)."""

from __future__ import annotations

import argparse
import logging
import os
import re
from functools import partial
from pathlib import Path

from .. import __version__
from ..execution.plugins import load_plugin_file
from ..labels import CONTRASTS, MASK_SOURCES, OUTPUT_RESOLUTIONS
from ..resolution import COARSE_AXIS_MM
from .config import RunConfig, load_settings

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16", "bf16-tail32", "bf16-recon32")
TILINGS = ("fast", "upstream")
_LABEL = re.compile(r"^[A-Za-z0-9]+$")

LOGGER = logging.getLogger("bmex_wf.cli")


# --------------------------------------------------------------------------- validators
def _existing_dir(value: str) -> Path:
    path = Path(value).expanduser().absolute()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"directory does not exist: {value}")
    return path


def _existing_file(value: str) -> Path:
    path = Path(value).expanduser().absolute()
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"file does not exist: {value}")
    return path


def _nifti_file(value: str) -> Path:
    path = _existing_file(value)
    if not re.search(r"\.nii(\.gz)?$", path.name):
        raise argparse.ArgumentTypeError(f"not a NIfTI file (.nii or .nii.gz): {value}")
    return path


def _label(value: str, prefix: str) -> str:
    label = value.strip().removeprefix(f"{prefix}-")
    if not _LABEL.match(label):
        raise argparse.ArgumentTypeError(
            f"invalid {prefix} label {value!r}: letters and digits only (optional '{prefix}-')")
    return label


def _positive(kind, value: str):
    try:
        number = kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {value!r}")
    return number


def _age_months(value: str) -> str:
    """A number of months (negative: in utero), or the words ``fetal``/``adult``."""
    from ..age import MAX_AGE_MONTHS

    word = value.strip().lower()
    if word in ("fetal", "adult"):
        return word
    try:
        months = float(word)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"age must be a number of months or 'fetal'/'adult', got {value!r}") from None
    if not -12 <= months <= MAX_AGE_MONTHS:
        raise argparse.ArgumentTypeError(
            f"age {value} months is out of range (-12 to {MAX_AGE_MONTHS})")
    return word


def _bids_filter_file(value: str) -> dict:
    from ..bids.inputs import load_bids_filters

    path = _existing_file(value)
    try:
        return load_bids_filters(path)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _output_space(value: str):
    """One ``--output-spaces`` value, checked against the TemplateFlow home."""
    from ..spaces.templateflow import OutputSpaceError, check_output_space, parse_output_space

    try:
        return check_output_space(parse_output_space(value))
    except OutputSpaceError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _plugin_file(value: str) -> Path:
    path = _existing_file(value)
    try:
        load_plugin_file(path)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return path


_pos_int = partial(_positive, int)
_pos_float = partial(_positive, float)


# --------------------------------------------------------------------------- shared groups
def _add_model_options(group, *, enhance: bool = False) -> None:
    group.add_argument("--models-dir", metavar="DIR", type=_existing_dir,
                       help="directory holding BME-X model files (searched before "
                       "$BMEX_MODELS_DIR and the user cache)")
    group.add_argument("--device", choices=DEVICES, default="auto",
                       help="where the networks run; 'auto' picks CUDA when available, decided "
                       "once when the workflow is built (default: %(default)s)")
    group.add_argument("--precision", choices=PRECISIONS, default="auto",
                       help="floating-point precision of inference; 'auto' uses bfloat16 only "
                       "for networks whose recorded bf16 fidelity reaches 45 dB, on devices that "
                       "run it natively; bf16-tail32 keeps the recon trunk's last layers, "
                       "bf16-recon32 the whole recon side in float32 (default: %(default)s)")
    group.add_argument("--tiling", choices=TILINGS, default="fast",
                       help="'fast': whole-volume tiling; 'upstream': the release's 40^3 "
                       "patches, step 18 (default: %(default)s)")
    group.add_argument("--brain-mask-source", choices=MASK_SOURCES, default="auto",
                       help="how the brain mask is obtained (default: %(default)s)")


def _add_output_spaces(group) -> None:
    group.add_argument("--output-spaces", nargs="+", metavar="SPACE", type=_output_space,
                       help="TemplateFlow templates to register the enhanced images to, with "
                       "optional ':cohort-<label>' and ':res-<N>' (e.g. MNI152NLin2009cAsym "
                       "MNIInfant UNCInfant:cohort-2); infant templates without a cohort get "
                       "the cohort of each image's age; fetal images are skipped unless a "
                       "fetal template is named. Templates come from $TEMPLATEFLOW_HOME "
                       "(default: none, no registration)")


def _add_output_resolution(group) -> None:
    group.add_argument("--output-resolution", choices=OUTPUT_RESOLUTIONS, default="auto",
                       help="grids of the outputs: 'native' the input's grid only; 'network' "
                       "also the network's 0.8 mm grid (0.75 mm fetal, 'res-' files) in the "
                       "input's axis order; 'auto' = 'network' for an image with a voxel axis "
                       f"coarser than {COARSE_AXIS_MM:g} mm, else 'native'. Not "
                       "--output-spaces' ':res-<N>' (default: %(default)s)")


def _add_performance_options(group) -> None:
    group.add_argument("--nprocs", "--n-cpus", "--n_cpus", dest="nprocs", metavar="N",
                       type=_pos_int, help="maximum number of processes (default: all CPUs)")
    group.add_argument("--omp-nthreads", metavar="N", type=_pos_int,
                       help="maximum number of threads per process (default: min(8, nprocs))")
    group.add_argument("--mem-gb", "--mem_gb", dest="mem_gb", metavar="GB", type=_pos_float,
                       help="upper bound of memory use, in GB")
    group.add_argument("--use-plugin", "--use_plugin", dest="use_plugin", metavar="FILE",
                       type=_plugin_file,
                       help="YAML file with 'plugin:' and 'plugin_args:' for any Nipype "
                       "execution plugin (e.g. MultiProc, SLURMGraph, SGE)")


# --------------------------------------------------------------------------- BIDS App
def get_parser() -> argparse.ArgumentParser:
    """The BIDS App parser: ``bmex-wf BIDS_DIR OUTPUT_DIR {participant,group} [options]``."""
    parser = argparse.ArgumentParser(
        prog="bmex-wf",
        description="bmex-wf: BME-X brain MRI enhancement (motion correction, super-resolution, "
        "denoising, harmonization and tissue segmentation of T1w/T2w images, fetal to adult) "
        "as a BIDS App. Subcommands: 'bmex-wf models' lists the model files found; "
        "'bmex-wf enhance' processes one image outside BIDS; 'demo' and 'train' are "
        "described by their own --help.",
    )
    parser.add_argument("bids_dir", type=_existing_dir, help="root of the input BIDS dataset")
    parser.add_argument("output_dir", type=lambda v: Path(v).expanduser().absolute(),
                        help="where BIDS-Derivatives outputs go")
    parser.add_argument("analysis_level", choices=["participant", "group"],
                        help="processing stage: 'participant' or 'group'")
    parser.add_argument("--version", action="version", version=f"bmex-wf {__version__}")

    bids = parser.add_argument_group("Options for filtering the BIDS dataset")
    bids.add_argument("--participant-label", "--participant_label", dest="participant_label",
                      nargs="+", metavar="LABEL", type=partial(_label, prefix="sub"),
                      help="subjects to process (with or without 'sub-'); default: all")
    bids.add_argument("--session-label", "--session_label", dest="session_label", nargs="+",
                      metavar="LABEL", type=partial(_label, prefix="ses"),
                      help="sessions to process (with or without 'ses-'); default: all")
    bids.add_argument("--bids-filter-file", dest="bids_filters", metavar="FILE",
                      type=_bids_filter_file,
                      help="JSON file of PyBIDS filters per query: "
                      '{"t1w": {"acquisition": "mprage"}, "t2w": {...}}')
    bids.add_argument("--derivatives", nargs="+", metavar="DIR", type=_existing_dir,
                      help="existing derivatives whose 'desc-brain_mask' images are reused as "
                      "'precomputed' brain masks")
    bids.add_argument("--skip-bids-validation", "--skip_bids_validation", action="store_true",
                      help="do not check the input dataset (problems are warnings anyway)")

    perf = parser.add_argument_group("Options to handle performance")
    _add_performance_options(perf)
    perf.add_argument("--resource-monitor", action="store_true",
                      help="record memory and CPU use of every node (Nipype resource monitor)")

    wf = parser.add_argument_group("Workflow configuration")
    _add_model_options(wf)
    wf.add_argument("--age-months", metavar="MONTHS", type=_age_months,
                    help="age of every processed image, overriding the BIDS tables: months "
                    "(negative: in utero), 'fetal' or 'adult'")
    _add_output_resolution(wf)
    _add_output_spaces(wf)

    other = parser.add_argument_group("Other options")
    other.add_argument("-w", "--work-dir", metavar="DIR",
                       type=lambda v: Path(v).expanduser().absolute(),
                       help="working directory for intermediate results; config.toml is written "
                       "there (default: ./work)")
    other.add_argument("--config-file", metavar="FILE", type=_existing_file,
                       help="reload the options of a config.toml written by an earlier run "
                       "(command-line options win)")
    other.add_argument("--reports-only", action="store_true",
                       help="only rebuild the reports from existing outputs")
    other.add_argument("--boilerplate-only", "--boilerplate", dest="boilerplate_only",
                       action="store_true", help="write the citation boilerplate and exit")
    other.add_argument("--sloppy", action="store_true",
                       help="testing only: quick registration to the --output-spaces "
                       "templates (fewer iterations, at 2 mm)")
    other.add_argument("--stop-on-first-crash", action="store_true",
                       help="stop at the first failure instead of processing the other images")
    other.add_argument("--write-graph", action="store_true",
                       help="write the workflow graph (needs Graphviz)")
    other.add_argument("--clean-workdir", action="store_true",
                       help="empty the work directory before running (do not use with "
                       "concurrent runs sharing it)")
    other.add_argument("--write-provenance", action="store_true",
                       help="write Nipype's W3C PROV records")
    _add_force_unlock(other)
    other.add_argument("-v", "--verbose", dest="verbose", action="count", default=0,
                       help="more log output (-v, -vv, -vvv)")
    return parser


def _check(parser: argparse.ArgumentParser, opts) -> None:
    if opts.output_dir == opts.bids_dir or opts.bids_dir in opts.output_dir.parents and \
            opts.output_dir.relative_to(opts.bids_dir).parts[0] != "derivatives":
        parser.error("OUTPUT_DIR must not be the BIDS dataset nor inside it "
                     "(except under BIDS_DIR/derivatives)")
    if opts.work_dir is not None and (opts.work_dir == opts.bids_dir
                                      or opts.bids_dir in opts.work_dir.parents):
        parser.error("--work-dir must not be inside the BIDS dataset")
    if opts.brain_mask_source == "precomputed" and not opts.derivatives:
        parser.error("--brain-mask-source precomputed needs --derivatives DIR holding "
                     "desc-brain_mask images")
    if opts.nprocs and opts.omp_nthreads and opts.omp_nthreads > opts.nprocs:
        parser.error(f"--omp-nthreads ({opts.omp_nthreads}) exceeds --nprocs ({opts.nprocs})")
    try:  # values reloaded from --config-file arrive as strings
        opts.output_spaces = [_output_space(v) if isinstance(v, str) else v
                              for v in opts.output_spaces or []]
    except argparse.ArgumentTypeError as exc:
        parser.error(f"--output-spaces: {exc}")


def parse_args(argv=None) -> argparse.Namespace:
    """Parse and check BIDS App arguments; ``--config-file`` values act as defaults."""
    parser = get_parser()
    opts = parser.parse_args(argv)
    if opts.config_file:
        try:
            settings = load_settings(opts.config_file)
        except ValueError as exc:
            parser.error(str(exc))
        keep = {action.dest for action in parser._actions}
        defaults = {k: (str(v) if isinstance(v, Path) else v)
                    for k, v in settings.items()
                    if k in keep and k not in ("bids_dir", "output_dir", "analysis_level",
                                               "config_file")}
        parser.set_defaults(**defaults)
        opts = parser.parse_args(argv)
        if "run_uuid" in settings:
            opts.loaded_run_uuid = settings["run_uuid"]
    _check(parser, opts)
    return opts


# --------------------------------------------------------------------------- enhance
def get_enhance_parser() -> argparse.ArgumentParser:
    """``bmex-wf enhance IN OUT_DIR --age-months N [options]``: one image outside BIDS."""
    parser = argparse.ArgumentParser(
        prog="bmex-wf enhance", description="Enhance one T1w or T2w image outside a BIDS dataset, with the same "
        "workflow and outputs as the BIDS App.")
    parser.add_argument("in_file", type=_nifti_file, help="input image (.nii or .nii.gz)")
    parser.add_argument("output_dir", type=lambda v: Path(v).expanduser().absolute(),
                        help="folder for the outputs")
    parser.add_argument("--age-months", required=True, metavar="MONTHS", type=_age_months,
                        help="age at scan: months (negative: in utero), 'fetal' or 'adult'")
    parser.add_argument("--contrast", choices=CONTRASTS,
                        help="contrast of the image (default: from a _T1w/_T2w file name)")
    parser.add_argument("--mask", type=_nifti_file,
                        help="brain mask to use (any grid); implies --brain-mask-source "
                        "precomputed")
    _add_model_options(parser)
    _add_output_resolution(parser)
    _add_output_spaces(parser)
    _add_performance_options(parser)
    parser.add_argument("-w", "--work-dir", metavar="DIR",
                        type=lambda v: Path(v).expanduser().absolute(),
                        help="working directory (default: OUTPUT_DIR/work)")
    _add_force_unlock(parser)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    return parser


def _add_force_unlock(group) -> None:
    group.add_argument("--force-unlock", action="store_true",
                       help="take over the work directory's lock when it was left by a run on "
                       "another host (a live run on this host is never overridden)")


def parse_enhance_args(argv=None) -> argparse.Namespace:
    """Parse and check ``bmex-wf enhance`` arguments (contrast resolved)."""
    parser = get_enhance_parser()
    opts = parser.parse_args(argv)
    if opts.contrast is None:
        found = re.search(r"_(T1w|T2w)\.nii(\.gz)?$", opts.in_file.name)
        if not found:
            parser.error(f"cannot tell the contrast of {opts.in_file.name}; pass --contrast")
        opts.contrast = found.group(1)
    if opts.mask is not None:
        if opts.brain_mask_source not in ("auto", "precomputed"):
            parser.error("--mask conflicts with --brain-mask-source "
                         f"{opts.brain_mask_source}")
        opts.brain_mask_source = "precomputed"
    elif opts.brain_mask_source == "precomputed":
        parser.error("--brain-mask-source precomputed needs --mask")
    return opts


# --------------------------------------------------------------------------- resolution
def resolve_use_gpu(device: str) -> bool:
    """``--device`` -> ``use_gpu``, decided once; ``cpu`` never probes for a GPU."""
    if device == "cpu":
        return False
    import torch

    available = torch.cuda.is_available()
    if device == "cuda" and not available:
        LOGGER.warning("--device cuda: no CUDA device on this machine; the enhancement nodes "
                       "will need one where they run")
    return True if device == "cuda" else available


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def build_config(opts) -> RunConfig:
    """Resolve command-line options into a :class:`RunConfig`."""
    cfg = RunConfig.from_namespace(opts)
    if getattr(opts, "loaded_run_uuid", None):
        LOGGER.info("Options reloaded from %s (earlier run %s)", opts.config_file,
                    opts.loaded_run_uuid)
    cfg.work_dir = Path(opts.work_dir or Path.cwd() / "work").absolute()
    cfg.nprocs = cfg.nprocs or _cpu_count()
    cfg.omp_nthreads = cfg.omp_nthreads or min(8, cfg.nprocs)
    cfg.use_gpu = resolve_use_gpu(cfg.device)
    if cfg.use_plugin:
        cfg.plugin, cfg.plugin_args = load_plugin_file(cfg.use_plugin)
    else:
        cfg.plugin, cfg.plugin_args = "MultiProc", {}
    if cfg.plugin in ("MultiProc", "LegacyMultiProc"):
        cfg.plugin_args.setdefault("n_procs", cfg.nprocs)
        if cfg.mem_gb:
            cfg.plugin_args.setdefault("memory_gb", cfg.mem_gb)
        cfg.plugin_args.setdefault("raise_insufficient", False)
        cfg.plugin_args.setdefault("maxtasksperchild", 1)
        # Forked workers can deadlock in PyTorch/OpenMP state inherited from this process.
        cfg.plugin_args.setdefault("mp_context", "forkserver")
    return cfg
