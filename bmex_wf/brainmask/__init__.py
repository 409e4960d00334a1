"""Brain masks: one module per source (nonzero, precomputed, template, LifespanStrip) and the chooser.

The public names are re-exported here: ``from bmex_wf import brainmask``.
"""

from .choose import SOURCES, choose_source, compute_brain_mask
from .errors import BrainMaskError, SourceUnavailable
from .nonzero import looks_skull_stripped, nonzero_mask, skull_stripped_evidence
from .precomputed import precomputed_mask
from .template import refine_mask, register_template, template_mask

__all__ = ["SOURCES", "BrainMaskError", "SourceUnavailable", "choose_source", "compute_brain_mask",
           "looks_skull_stripped", "nonzero_mask", "precomputed_mask", "refine_mask",
           "register_template", "skull_stripped_evidence", "template_mask"]
