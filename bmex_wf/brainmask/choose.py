"""Brain masks from several sources, and the ``auto`` choice between them.

Sources
-------
``lifespanstrip``
    Network S with the official ``T1T2w-model.pt`` and its intensity template
    (spec 8.3; see :mod:`bmex_wf.brainmask.lifespanstrip`).
``precomputed``
    A user mask on any grid, resampled (nearest neighbour) onto the image grid.
``nonzero``
    For images that are already skull-stripped (background exactly 0): the
    non-zero voxels, holes filled, largest component kept.
``template``
    Offline fallback for full heads without LifespanStrip weights. nilearn bundles
    only a skull-stripped MNI152 (ICBM 2009a) T1 template and its brain mask (no
    head template), so a head model is made from them: the template brain wrapped
    in a dark CSF gap, a dark skull and a bright scalp shell
    (:func:`~bmex_wf.brainmask.synthetic_head.synthetic_head`, adult thicknesses). It is
    registered to the image with SimpleITK at 2 mm (Mattes mutual information
    sampled within ``METRIC_MARGIN_MM`` of the template brain; start: centres of
    mass of the Otsu head foregrounds and the cube root of their volume ratio as
    scale; a similarity stage, rigid + isotropic scale, at 4 then 2 mm; an affine
    stage on request), its brain mask is carried onto the image grid (linear,
    threshold 0.5), and refined by intensity (:func:`refine_mask`).
``auto``
    ``precomputed`` when a mask is given; otherwise ``nonzero`` for skull-stripped
    images, ``lifespanstrip`` when its weights and template are available, and
    ``template`` otherwise.

Every function returns masks on the input image's own grid (any orientation).
"""

from __future__ import annotations

import logging

import nibabel as nib
import numpy as np

from bmex_wf.brainmask.common import _name
from bmex_wf.brainmask.errors import BrainMaskError, SourceUnavailable
from bmex_wf.brainmask.nonzero import looks_skull_stripped, nonzero_mask, skull_stripped_evidence
from bmex_wf.brainmask.precomputed import precomputed_mask
from bmex_wf.brainmask.template import template_mask
from bmex_wf.labels import MASK_SOURCES

LOGGER = logging.getLogger(__name__)


#: Mask sources, ``auto`` first.
SOURCES = MASK_SOURCES


def choose_source(img, *, in_mask=None, models_dir=None) -> tuple[str, str]:
    """The source ``auto`` picks for ``img``, and why.

    ``precomputed`` when ``in_mask`` is given; ``nonzero`` when the image looks
    skull-stripped; ``lifespanstrip`` when its weights and template are found;
    ``template`` otherwise.
    """
    from bmex_wf.brainmask.lifespanstrip import lifespanstrip_available

    if in_mask:
        return "precomputed", f"a mask was given ({in_mask})"
    evidence = skull_stripped_evidence(img)
    if looks_skull_stripped(img, evidence):
        return "nonzero", (f"the image looks skull-stripped ({evidence['zero_fraction']:.0%} "
                           "exact zeros forming the background)")
    if lifespanstrip_available(models_dir):
        return "lifespanstrip", "full-head image and LifespanStrip weights found"
    return "template", "full-head image and no LifespanStrip weights (T1T2w-model.pt + template)"


def compute_brain_mask(img, source: str = "auto", *, in_mask=None, models_dir=None,
                       device: str = "cpu", num_threads: int | None = None
                       ) -> tuple[nib.Nifti1Image, str]:
    """Brain mask of ``img`` on its own grid, and the source that made it.

    Parameters
    ----------
    img : nibabel image
        3-D image, any orientation.
    source : str
        One of :data:`SOURCES`.
    in_mask : path-like, optional
        User mask (needed by ``precomputed``; makes ``auto`` pick it).
    models_dir : path-like, optional
        First folder searched for ``T1T2w-model.pt`` and its template.
    device : str
        Torch device for LifespanStrip (``"cpu"``, ``"cuda"``, ``"auto"``).
    num_threads : int, optional
        CPU threads for SimpleITK and torch.

    Returns
    -------
    mask_img, source_used
        uint8 mask (0/1) on ``img``'s grid, and the source that produced it.
    """
    if source not in SOURCES:
        raise BrainMaskError(f"unknown mask source {source!r}; expected one of {', '.join(SOURCES)}")
    if source == "auto":
        source, reason = choose_source(img, in_mask=in_mask, models_dir=models_dir)
        LOGGER.info("Brain mask source for %s: %s (%s)", _name(img), source, reason)
    if source == "precomputed":
        if not in_mask:
            raise SourceUnavailable("mask source 'precomputed' needs an input mask (in_mask)")
        mask = precomputed_mask(in_mask, img)
    elif source == "nonzero":
        mask = nonzero_mask(img)
    elif source == "lifespanstrip":
        from bmex_wf.brainmask.lifespanstrip import lifespanstrip_mask

        mask = lifespanstrip_mask(img, models_dir=models_dir, device=device,
                                  num_threads=num_threads)
    else:
        mask = template_mask(img, num_threads=num_threads)
    LOGGER.info("Brain mask (%s): %d voxels", source, int(np.count_nonzero(mask.dataobj)))
    return mask, source
