"""LifespanStrip pre/post-processing and the full path with a small network S."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from bmex_wf.brainmask import lifespanstrip as ls
from bmex_wf.brainmask.errors import SourceUnavailable

from .helpers import distance_from, rule_network


@pytest.fixture
def no_default_models(monkeypatch, tmp_path):
    """Model search limited to what a test passes (no environment or user cache)."""
    monkeypatch.delenv("BMEX_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _write_template(folder, shape=(30, 36, 30), seed=0):
    rng = np.random.default_rng(seed)
    data = rng.gamma(2.0, 200.0, size=shape).astype(np.int16)
    nib.AnalyzeImage(data, np.diag([5.0, 5.0, 5.0, 1.0])).to_filename(str(folder / "template.hdr"))


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory):
    """T1T2w-model.pt (network S, width 8, rule weights) and a synthetic template."""
    from bmex_wf.models.checkpoints import save_network

    folder = tmp_path_factory.mktemp("models")
    save_network(rule_network("skullstrip"), folder / "T1T2w-model.pt")
    _write_template(folder)
    return folder


def _ball_image(shape=(40, 44, 36), radius=10.0, zoom=2.5, oblique=True, seed=0):
    centre = (np.array(shape) - 1) / 2.0
    dist = distance_from(centre + np.array([5.0, -4.0, 3.0]), shape)  # off-centre: flips would show
    rng = np.random.default_rng(seed)
    data = np.abs(rng.normal(0, 20, size=shape)) + np.where(dist <= radius, 600.0, 0.0)
    affine = np.diag([zoom, zoom, zoom, 1.0])
    if oblique:
        angle = np.deg2rad(20)
        rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                        [0, 0, 1]])
        affine[:3, :3] = rot @ affine[:3, :3]
    affine[:3, 3] = -affine[:3, :3] @ centre
    return nib.Nifti1Image(data.astype(np.float32), affine), dist <= radius


def test_missing_weights_or_template_is_a_clear_unavailable_source(tmp_path, no_default_models):
    with pytest.raises(SourceUnavailable, match="T1T2w-model.pt: LifespanStrip weights not found"):
        ls.find_lifespanstrip(tmp_path)
    assert not ls.lifespanstrip_available(tmp_path)
    (tmp_path / "T1T2w-model.pt").write_bytes(b"stand-in")
    with pytest.raises(SourceUnavailable, match=r"template missing .*template\.hdr, template\.img"):
        ls.find_lifespanstrip(tmp_path)
    _write_template(tmp_path)
    assert ls.find_lifespanstrip(tmp_path) == (tmp_path / "T1T2w-model.pt",
                                               tmp_path / "template.hdr")


def test_unreadable_template_is_unavailable(tmp_path):
    _write_template(tmp_path)
    img = tmp_path / "template.img"
    img.write_bytes(img.read_bytes()[:100])  # truncated data file
    with pytest.raises(SourceUnavailable, match="template.hdr: LifespanStrip template unreadable"):
        ls.template_landmarks(tmp_path / "template.hdr")


def test_brain_probability_sums_channels_2_and_3():
    probs = np.random.default_rng(0).dirichlet(np.ones(4), size=(4, 5, 6)).transpose(3, 0, 1, 2)
    assert np.allclose(ls.brain_probability(probs), probs[2] + probs[3])
    with pytest.raises(ValueError, match="4-channel"):
        ls.brain_probability(probs[:2])


def test_upsampling_aligns_corners():
    low = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    up = ls.upsample(low, (5, 3, 4))
    assert up.shape == (5, 3, 4)
    for corner in np.ndindex(2, 2, 2):
        index = tuple(c * (n - 1) for c, n in zip(corner, up.shape))
        assert up[index] == pytest.approx(low[corner])
    assert up[2, 1, 0] == pytest.approx(low[:, :, 0].mean())


def test_postprocessing_argmax_opening_component_holes():
    shape = (40, 40, 40)
    grid = np.indices(shape)
    prob = np.zeros(shape, dtype=np.float32)
    inside = sum((g - 20) ** 2 for g in grid) <= 10**2
    prob[inside] = 0.9
    prob[20, 20:, 19:21] = 0.9          # thin (2-voxel) spike: removed by the opening
    prob[2:9, 2:9, 2:9] = 0.9           # separate blob that survives opening: not the largest
    prob[25, 20, 20] = 0.2              # one-voxel hole: filled
    prob[13:16, 19:22, 19:22] = 0.5     # tie (0.5 vs 0.5) -> background; 27-voxel hole stays
    mask = ls.postprocess(prob, shape)
    assert mask[20, 20, 20] and mask[25, 20, 20]
    assert not mask[20, 35, 19] and not mask[5, 5, 5]
    assert not mask[14, 20, 20]
    assert abs(int(mask.sum()) - int(inside.sum())) < 0.1 * inside.sum()


def test_geometry_with_a_thresholding_stand_in(monkeypatch, models_dir, no_default_models):
    """With an ideal network the mask is the bright ball, on the oblique input grid."""
    from bmex_wf.models import inference

    def stand_in(volume, network, **kwargs):
        from skimage.filters import threshold_otsu

        brain = (volume > threshold_otsu(volume)).astype(np.float32)
        return np.stack([1 - brain, 0 * brain, 0.5 * brain, 0.5 * brain])

    monkeypatch.setattr(inference, "skullstrip_volume", stand_in)
    img, truth = _ball_image()
    out = ls.lifespanstrip_mask(img, models_dir=models_dir, n4=False)
    mask = np.asanyarray(out.dataobj) > 0
    assert out.shape == img.shape and np.allclose(out.affine, img.affine)
    assert out.get_data_dtype() == np.uint8
    dice = 2 * (mask & truth).sum() / (mask.sum() + truth.sum())
    assert dice > 0.9


def test_full_path_rule_weights_is_orientation_independent(models_dir, no_default_models):
    img, _ = _ball_image(shape=(36, 40, 32), radius=9.0)
    out = ls.lifespanstrip_mask(img, models_dir=models_dir)
    mask = np.asanyarray(out.dataobj)
    assert out.shape == img.shape and np.array_equal(out.affine, img.affine)
    assert set(np.unique(mask)) <= {0, 1} and mask.any()
    # the same head stored in another voxel order gives the same mask, voxel for voxel
    ornt = nib.orientations.axcodes2ornt(("P", "I", "R"))
    turned = img.as_reoriented(nib.orientations.ornt_transform(
        nib.orientations.io_orientation(img.affine), ornt))
    out_turned = ls.lifespanstrip_mask(turned, models_dir=models_dir)
    back = out_turned.as_reoriented(nib.orientations.ornt_transform(
        nib.orientations.io_orientation(turned.affine), nib.orientations.io_orientation(img.affine)))
    assert np.allclose(back.affine, img.affine, atol=1e-5)
    assert np.array_equal(np.asanyarray(back.dataobj), mask)
