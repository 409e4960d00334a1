"""``benchmarks/bench_superres.py``: thick-slice simulation and the network-grid candidate."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nibabel.affines import apply_affine, voxel_sizes
from scipy.ndimage import gaussian_filter
from scipy.stats import spearmanr

from .helpers import IdentityNetwork, load_benchmark, rotation


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_superres")


Identity = IdentityNetwork


def test_slab_average_centres_each_thick_slice_on_its_slab(bench):
    affine = rotation(20, 0) @ np.diag([0.8, 0.8, 0.8, 1.0])
    ijk = np.indices((6, 7, 18)).reshape(3, -1).T
    world_z = apply_affine(affine, ijk)[:, 2].reshape(6, 7, 18)
    img = nib.Nifti1Image(world_z.astype(np.float32), affine)
    thick = bench.slab_average(img, axis=2)
    assert thick.shape == (6, 7, 4)  # 18 slices: the last 2 do not fill a slab
    np.testing.assert_allclose(voxel_sizes(thick.affine), (0.8, 0.8, 3.2), atol=1e-6)
    centres = apply_affine(thick.affine, np.indices(thick.shape).reshape(3, -1).T)[:, 2]
    np.testing.assert_allclose(np.asanyarray(thick.dataobj).ravel(), centres, atol=1e-4)


def test_identity_network_gives_the_trilinear_candidate(bench, monkeypatch):
    """With a network that returns its input, the network-grid candidate is the trilinear one
    up to the monotone intensity matching: the geometry of the candidate is right."""
    from bmex_wf import models
    from bmex_wf.models.registry import ResolvedModel, builtin_model_path, enhance_entry

    monkeypatch.setattr(models, "load_network", lambda path, kind: Identity())
    field = gaussian_filter(np.random.default_rng(0).random((40, 40, 40)), 3)
    radius = np.sqrt(((np.indices(field.shape) - 19.5) ** 2).sum(axis=0))
    brain = nib.Nifti1Image((1000 * field * (radius < 17)).astype(np.float32),
                            np.diag([0.8, 0.8, 0.8, 1.0]))
    thick = bench.slab_average(brain, axis=2)
    model = ResolvedModel(builtin_model_path(), enhance_entry("Month24", "T1w"), builtin=True)
    enhanced = bench.network_grid_enhanced(thick, model, threads=1, bias_correction=False)
    assert nib.aff2axcodes(enhanced.affine) == ("R", "A", "S") and enhanced.shape == (40, 40, 40)
    trilinear = bench.spline_upsample(thick, enhanced.shape, enhanced.affine, order=1)
    sr, tri = np.asanyarray(enhanced.dataobj), np.asanyarray(trilinear.dataobj)
    inside = sr != 0
    assert inside.mean() > 0.2
    assert spearmanr(sr[inside], tri[inside])[0] > 0.999
    bspline = np.asanyarray(bench.spline_upsample(thick, enhanced.shape, enhanced.affine, 3).dataobj)
    assert spearmanr(bspline[inside], tri[inside])[0] < spearmanr(sr[inside], tri[inside])[0]
