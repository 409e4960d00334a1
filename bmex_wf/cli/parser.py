"""Argument parser of the ``bmex-wf`` BIDS App."""

from __future__ import annotations

import argparse
from pathlib import Path

from .. import __version__


def _existing_dir(value: str) -> Path:
    path = Path(value).expanduser().absolute()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"directory does not exist: {value}")
    return path


def get_parser() -> argparse.ArgumentParser:
    """The BIDS App parser: ``bmex-wf BIDS_DIR OUTPUT_DIR {participant,group}``."""
    parser = argparse.ArgumentParser(
        prog="bmex-wf",
        description="bmex-wf: BME-X brain MRI enhancement (motion correction, super-resolution, "
        "denoising, harmonization and tissue segmentation of T1w/T2w images, fetal to adult) "
        "as a BIDS App. Subcommands: 'bmex-wf models' lists the model files found; "
        "'bmex-wf enhance', 'demo' and 'train' are described by their own --help.",
    )
    parser.add_argument("bids_dir", type=_existing_dir, help="root of the input BIDS dataset")
    parser.add_argument("output_dir", type=Path, help="where BIDS-Derivatives outputs go")
    parser.add_argument("analysis_level", choices=["participant", "group"],
                        help="processing stage: 'participant' or 'group'")
    parser.add_argument("--version", action="version", version=f"bmex-wf {__version__}")
    return parser
