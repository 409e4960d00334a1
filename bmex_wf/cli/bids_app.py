"""Running the BIDS App (participant and group levels)."""

from __future__ import annotations

import logging

from .parser import get_parser

LOGGER = logging.getLogger("bmex_wf.cli")


def bids_app_main(argv) -> int:
    """Parse BIDS App arguments and run the requested level."""
    opts = get_parser().parse_args(argv)
    LOGGER.error("Processing of %s is not available in this version yet.", opts.bids_dir)
    return 1


def subcommand_main(name: str, argv) -> int:
    """Subcommands that are not available yet."""
    LOGGER.error("'bmex-wf %s' is not available in this version yet.", name)
    return 1
