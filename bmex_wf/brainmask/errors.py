"""Errors of the brain-mask sources."""

from __future__ import annotations


class BrainMaskError(ValueError):
    """A brain mask cannot be made or read (message names the file and the problem)."""


class SourceUnavailable(BrainMaskError):
    """A mask source cannot run here (missing weights, template or input mask)."""
