"""Console logging of the command-line entry points."""

from __future__ import annotations

import logging

#: Format of bmex-wf's log lines.
LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s: %(message)s"


def configure_logging(level: int = logging.INFO) -> None:
    """Log to stderr in :data:`LOG_FORMAT`, unless the root logger has a handler already."""
    if not logging.getLogger().handlers:
        logging.basicConfig(level=level, format=LOG_FORMAT)
