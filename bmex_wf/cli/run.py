"""The ``bmex-wf`` console script: dispatch a subcommand, or run the BIDS App (:mod:`.participant`)."""

from __future__ import annotations

import sys

from ..logging_setup import configure_logging

#: The first positional argument is a subcommand only when it is exactly one of these.
SUBCOMMANDS = ("models", "enhance", "demo", "train")


def _subcommand_main(name: str):
    """The ``main(argv)`` of subcommand ``name``."""
    if name == "models":
        from .models import main
    elif name == "demo":
        from .demo import main
    elif name == "train":
        from ..training.cli import main
    else:
        from .enhance import enhance_main as main
    return main


def main(argv=None) -> int:
    """Entry point of ``bmex-wf``; returns the process exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    configure_logging()
    if argv and argv[0] in SUBCOMMANDS:
        return _subcommand_main(argv[0])(argv[1:])
    from .participant import bids_app_main

    return bids_app_main(argv)


if __name__ == "__main__":
    sys.exit(main())
