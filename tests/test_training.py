"""Training pipeline: degradations, tissue targets, data sources, loop, export, CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bmex_wf.labels import tissue_order
from bmex_wf.models import build_network, load_network
from bmex_wf.training import cli
from bmex_wf.training.data import (
    CropStream,
    TrainingDataError,
    Volume,
    list_sources,
    make_example,
    parse_template,
    template_sources,
)
from bmex_wf.training.degradations import (
    DEGRADATIONS,
    INTENSITY_SCALE,
    DegradationError,
    degrade,
    random_kinds,
)
from bmex_wf.training.loop import (
    TrainConfig,
    TrainingError,
    best_validation_step,
    calibrate_batch_norms,
    collate_examples,
    compute_loss,
    export_model,
    fit_output_affine,
    init_recon_path,
    load_checkpoint,
    psnr,
    train,
)
from bmex_wf.training.targets import TargetError, tissue_labels

from .helpers import distance_from, shared_path


def _phantom(size: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A smooth 3-tissue phantom in template units: WM core, GM shell, CSF rim, background."""
    radius = (distance_from(((size - 1) / 2,) * 3, (size,) * 3) / (size / 2)).astype(np.float32)
    rng = np.random.default_rng(seed)
    texture = rng.normal(0, 4, (size,) * 3).astype(np.float32)
    data = np.select([radius < 0.45, radius < 0.65, radius < 0.8], [420.0, 320.0, 180.0], 0.0)
    mask = radius < 0.8
    return ((data + texture) * mask).astype(np.float32), mask


@pytest.fixture(scope="module")
def phantom():
    return _phantom()


# ----------------------------------------------------------------------------- degradations
@pytest.mark.parametrize("kind", sorted(DEGRADATIONS))
def test_degradation_changes_crop_and_is_seeded(phantom, kind):
    clean, _ = phantom
    first = degrade(clean, [kind], seed=3)
    assert first.shape == clean.shape and first.dtype == np.float32
    assert np.array_equal(first, degrade(clean, [kind], seed=3))
    assert not np.array_equal(first, degrade(clean, [kind], seed=4))
    assert not np.allclose(first, clean, atol=1.0)
    assert first.min() >= 0


def test_noise_std_within_documented_range(phantom):
    clean, _ = phantom
    low, high = (s * INTENSITY_SCALE for s in DEGRADATIONS["noise"]["std"])
    stds = [float((degrade(clean, ["noise"], seed=s, renormalize=False) - clean).std()) for s in range(6)]
    assert all(low * 0.9 <= s <= high * 1.1 for s in stds), stds
    assert max(stds) - min(stds) > 1.0  # the level is drawn, not fixed


def test_blur_and_thick_slices_remove_fine_detail(phantom):
    clean, _ = phantom

    def roughness(a):  # gradient energy per axis
        return np.array([float(np.square(np.diff(a, axis=ax)).mean()) for ax in range(3)])

    blurred = roughness(degrade(clean, ["blur"], seed=1, renormalize=False)) / roughness(clean)
    assert np.all(blurred < 0.9), blurred
    thick = roughness(degrade(clean, ["anisotropy"], seed=1, renormalize=False)) / roughness(clean)
    assert thick.min() < 0.8, thick  # along the thick-slice axis


def test_gamma_is_monotonic_and_renormalisation_restores_range(phantom):
    clean, _ = phantom
    raw = degrade(clean, ["gamma"], seed=2, renormalize=False)
    order = np.argsort(clean, axis=None)
    assert np.all(np.diff(raw.ravel()[order]) >= -1e-2 * INTENSITY_SCALE)
    matched = degrade(clean, ["gamma"], seed=2)
    assert abs(float(np.median(matched[clean > 0])) - float(np.median(clean[clean > 0]))) < 25


def test_degradation_errors_and_kind_draws(phantom):
    clean, _ = phantom
    with pytest.raises(DegradationError, match="unknown degradation"):
        degrade(clean, ["wobble"], seed=0)
    with pytest.raises(DegradationError, match="3-D"):
        degrade(clean[0], ["noise"], seed=0)
    rng = np.random.default_rng(0)
    draws = [random_kinds(rng) for _ in range(200)]
    assert any(d == () for d in draws)
    assert all(len(d) <= 3 and set(d) <= set(DEGRADATIONS) for d in draws)
    assert {k for d in draws for k in d} == set(DEGRADATIONS)
    limited = [random_kinds(rng, max_kinds=3, p_clean=0.0, allowed=("noise", "motion")) for _ in range(100)]
    assert {k for d in limited for k in d} == {"motion", "noise"}
    assert all(1 <= len(d) <= 2 for d in limited)


# ---------------------------------------------------------------------------------- targets
def test_tissue_labels_on_real_t1w_crop():
    import nibabel as nib

    path = shared_path("data", "test_BIDS", "sub-0001", "ses-V01", "anat", "sub-0001_ses-V01_T1w.nii.gz")
    img = nib.load(path)
    crop = np.asarray(img.dataobj[110:174, 110:174, 150:214], dtype=np.float32)
    mask = crop > 0
    labels = tissue_labels(crop, mask)
    assert set(np.unique(labels)) == {0, 1, 2, 3}
    assert np.all(labels[~mask] == 0) and np.all(labels[mask] > 0)
    means = [float(crop[labels == k].mean()) for k in (1, 2, 3)]
    assert means[0] < means[1] < means[2]  # T1w: CSF < GM < WM


def test_tissue_order_follows_contrast_and_age(phantom):
    clean, mask = phantom
    t1 = tissue_labels(clean, mask, tissue_order("T1w"))
    t2 = tissue_labels(clean, mask, tissue_order("T2w"))
    swap = np.array([0, 3, 2, 1], dtype=np.uint8)
    assert np.array_equal(t2, swap[t1])
    assert tissue_order("T1w", "Month0") == (1, 3, 2)
    with pytest.raises(ValueError, match="contrast"):
        tissue_order("FLAIR")
    with pytest.raises(TargetError, match="shape"):
        tissue_labels(clean, mask[:-1])


# ------------------------------------------------------------------------------------- data
def test_sources_from_templates_and_lists(tmp_path):
    templates = shared_path("data", "templates")
    sources = template_sources(templates)
    names = {s.name for s in sources}
    # Month0 = Month3 and Month12 = Month18 are byte-identical: each pair counted once.
    assert len(sources) == 11 and not ({"Template-Month0-T1w", "Template-Month3-T1w"} <= names)
    assert parse_template("Template-Fetal-T2w") == ("Fetal", "T2w")
    with pytest.raises(TrainingDataError, match="age template"):
        parse_template("MNI152")
    tsv = tmp_path / "list.tsv"
    tsv.write_text("image\ttemplate\tmask\n" + f"{templates}/Template-Month9-T1w.nii.gz\tTemplate-Month9-T1w\tn/a\n")
    (src,) = list_sources(tsv)
    assert src.mask is None and src.contrast == "T1w" and src.age_group == "Month9"
    tsv.write_text("image\ttemplate\nmissing.nii.gz\tTemplate-Month9-T1w\n")
    with pytest.raises(TrainingDataError, match="line 2"):
        list_sources(tsv)


def _volume(seed: int) -> Volume:
    clean, mask = _phantom(48, seed)
    return Volume(name=f"phantom{seed}", clean=clean, mask=mask.astype(np.uint8),
                  labels=tissue_labels(clean, mask))


def test_examples_are_seeded_crops():
    vol = _volume(0)
    one = make_example(vol, 16, np.random.default_rng(5))
    two = make_example(vol, 16, np.random.default_rng(5))
    assert one["input"].shape == one["target"].shape == one["labels"].shape == (16, 16, 16)
    assert all(np.array_equal(one[k], two[k]) for k in ("input", "target", "labels"))
    assert one["mask"].any()


def test_example_input_is_masked_like_inference_input():
    vol = _volume(1)
    example = make_example(vol, 32, np.random.default_rng(3), kinds=("noise",), margin=0)
    outside = ~example["mask"]
    assert outside.any() and np.all(example["input"][outside] == 0)
    assert np.any(example["input"][example["mask"]] != example["target"][example["mask"]])


# ------------------------------------------------------------------------------------- loop
@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_loss_decreases_on_a_fixed_batch(one_thread):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    vol = _volume(0)
    examples = [make_example(vol, 16, rng, kinds=("noise",)) for _ in range(2)]
    batch = collate_examples(examples)
    net = build_network("enhance", 8)
    init_recon_path(net, [vol], 16)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    config = TrainConfig()
    losses = []
    for _ in range(8):
        loss, _ = compute_loss(net.train(), batch, config, torch.device("cpu"))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert np.mean(losses[-3:]) < 0.9 * np.mean(losses[:3]), losses


def test_brain_loss_ignores_errors_outside_the_mask(one_thread):
    vol = _volume(0)
    batch = collate_examples([make_example(vol, 16, np.random.default_rng(9), kinds=(), margin=0)])
    outside = ~batch["mask"]
    assert outside.any()
    net = build_network("enhance", 8).eval()
    with torch.no_grad():
        _, recon = net(batch["input"][:, None])
    changed = dict(batch, target=batch["target"].masked_fill(outside, 500.0))
    losses = {}
    for region in ("brain", "crop"):
        config = TrainConfig(recon_region=region, seg_weight=0.0)
        losses[region] = [compute_loss(net, b, config, torch.device("cpu"))[1]["recon"] for b in (batch, changed)]
    assert losses["brain"][0] == pytest.approx(losses["brain"][1])
    assert losses["crop"][1] > losses["crop"][0] + 0.1
    inside = (recon[:, 0] - batch["target"]).abs()[batch["mask"]].mean().item() / INTENSITY_SCALE  # one crop
    assert losses["brain"][0] == pytest.approx(inside, rel=1e-4)


def test_initial_network_is_the_identity(one_thread):
    torch.manual_seed(0)
    vol = _volume(0)
    rng = np.random.default_rng(2)

    def batch():
        examples = [make_example(vol, 16, rng) for _ in range(2)]
        return collate_examples(examples)

    net = build_network("enhance", 8)
    init_recon_path(net, [vol], 16)
    calibration = [batch() for _ in range(2)]
    calibrate_batch_norms(net, calibration, torch.device("cpu"))
    assert fit_output_affine(net, calibration, torch.device("cpu")) < 0.1
    fresh = make_example(vol, 24, rng, kinds=("noise",))["input"]
    with torch.no_grad():
        recon = net.eval()(torch.from_numpy(fresh)[None, None])[1][0, 0].numpy()
    assert np.allclose(recon, fresh, atol=0.5)


def test_train_resume_and_export(tmp_path, one_thread):
    vols = [_volume(0), _volume(1)]
    config = TrainConfig(width=8, crop=16, batch=2, steps=2, val_every=2, val_crop=16, val_per_kind=1,
                         workers=0, num_threads=1, calibration_batches=1)
    out = tmp_path / "run"
    first = train(vols[:1], vols[1:], config, out, progress=False)
    assert first["step"] == 2 and np.isfinite(first["best_psnr"])
    scores = {row["step"]: row["psnr_out"] for row in load_checkpoint(out / "last.pt")["history"] if "psnr_out" in row}
    assert sorted(scores) == [0, 2] and first["best_psnr"] == scores[2]  # the identity start is no candidate
    config.steps = 3
    second = train(vols[:1], vols[1:], config, out, progress=False)
    assert second["step"] == 3
    state = load_checkpoint(out / "last.pt")
    assert state["step"] == 3 and any("psnr_out" in row for row in state["history"])
    net = load_network(out / "best.pt", "enhance")
    assert net.width == 8
    exported = export_model(out / "last.pt", tmp_path / "model.pt", half=True)
    stored = torch.load(exported, weights_only=True)
    assert list(stored) == list(build_network("enhance", 8).state_dict())
    assert stored["conv1.weight"].dtype == torch.float16
    with pytest.raises(TrainingError, match="width"):
        train(vols[:1], [], TrainConfig(width=16, crop=16, batch=1, steps=4, workers=0, calibration_batches=1),
              out, progress=False)


def test_weight_average_is_what_gets_exported(tmp_path, one_thread):
    vols = [_volume(0), _volume(1)]
    config = TrainConfig(width=8, crop=16, batch=2, steps=3, val_every=3, val_crop=16, val_per_kind=1,
                         workers=0, num_threads=1, calibration_batches=1, ema_decay=0.5)
    out = tmp_path / "run"
    train(vols[:1], vols[1:], config, out, progress=False)
    state = load_checkpoint(out / "last.pt")
    assert int(state["ema"]["n_averaged"]) == 3
    averaged = state["ema"]["module.conv1.weight"]
    assert not torch.equal(averaged, state["model"]["conv1.weight"])
    exported = torch.load(export_model(out / "last.pt", tmp_path / "m.pt", half=False), weights_only=True)
    assert torch.equal(exported["conv1.weight"], averaged)
    config.steps = 4  # resuming carries the average on
    train(vols[:1], vols[1:], config, out, progress=False)
    assert int(load_checkpoint(out / "last.pt")["ema"]["n_averaged"]) == 4


def test_psnr_is_peak_based():
    target = np.zeros((4, 4, 4))
    mask = np.ones_like(target, dtype=bool)
    assert psnr(target + 10.0, target, mask) == pytest.approx(40.0)


def test_cli_rejects_bad_settings(tmp_path, caplog):
    assert cli.main([str(tmp_path / "out"), "--width", "12"]) == 1
    assert "multiples of 8" in caplog.text
    assert cli.main([str(tmp_path / "out")]) == 1
    assert "no training images" in caplog.text
    assert cli.main([str(tmp_path / "out"), "--kinds", "noise", "wobble"]) == 1
    assert "unknown degradation kind(s) ['wobble']" in caplog.text
    assert cli.main([str(tmp_path / "out"), "--teacher", str(tmp_path / "missing.pt")]) == 1
    assert "missing.pt: no such teacher model file" in caplog.text
    assert not (tmp_path / "out").exists()


def test_shipped_builtin_model():
    from importlib import resources

    path = resources.files("bmex_wf.data").joinpath("bmex-builtin-enhance.pt")
    assert path.is_file(), "the built-in model is missing from the package data"
    assert path.stat().st_size <= 10 * 1024 * 1024
    stored = torch.load(str(path), map_location="cpu", weights_only=True)
    net = load_network(str(path), "enhance")
    assert list(stored) == list(build_network("enhance", net.width).state_dict())
    assert all(v.dtype == torch.float32 for v in stored.values() if v.is_floating_point())
    with torch.no_grad():
        seg, recon = net(torch.full((1, 1, 16, 16, 16), 300.0))
    assert seg.shape == (1, 4, 16, 16, 16) and torch.isfinite(recon).all()


def test_crop_stream_draws_at_most_max_kinds():
    stream = CropStream([_volume(0)], 16, seed=3, max_kinds=1, p_clean=0.0)
    kinds = [example["kinds"] for _, example in zip(range(6), stream)]
    assert all(k and "," not in k for k in kinds), kinds


def test_stop_step_keeps_the_schedule_of_steps(tmp_path, one_thread):
    """``stop_step`` ends the run early; the learning rate follows the schedule of ``steps``."""
    from bmex_wf.training.loop import _lr

    vols = [_volume(0), _volume(1)]
    config = TrainConfig(width=8, crop=16, batch=2, steps=100, stop_step=2, val_every=50, val_crop=16,
                         val_per_kind=1, workers=0, num_threads=1, calibration_batches=1)
    result = train(vols[:1], [], config, tmp_path / "run", progress=False)
    assert result["step"] == 2 and load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2
    assert _lr(2, config) > _lr(2, TrainConfig(steps=2))  # not the decay of a 2-step run


def test_final_fit_stops_at_the_validated_runs_best_step(tmp_path, one_thread, caplog):
    """``--stop-at-best-of`` takes the step where a validated run peaked, on that run's schedule."""
    vols = [_volume(0), _volume(1)]
    config = TrainConfig(width=8, crop=16, batch=2, steps=4, val_every=1, val_crop=16, val_per_kind=1,
                         workers=0, num_threads=1, calibration_batches=1)
    validated = tmp_path / "validated"
    train(vols[:1], vols[1:], config, validated, progress=False)
    scores = {row["step"]: row["psnr_out"] for row in load_checkpoint(validated / "last.pt")["history"]
              if "psnr_out" in row and row["step"] > 0}
    assert best_validation_step(validated) == (max(scores, key=scores.get), 4)
    train(vols[:1], [], TrainConfig(width=8, crop=16, batch=1, steps=1, workers=0, calibration_batches=1),
          tmp_path / "unvalidated", progress=False)
    with pytest.raises(TrainingError, match="no validation"):
        best_validation_step(tmp_path / "unvalidated")
    assert cli.main([str(tmp_path / "final"), "--stop-at-best-of", str(validated), "--steps", "5"]) == 1
    assert "its schedule has 4 steps, not --steps 5" in caplog.text
    assert not (tmp_path / "final").exists()


def test_pair_crops_come_from_the_pair_or_its_degraded_target():
    """A real pair's crop uses its stored input, or with ``synthetic`` a degradation of its target."""
    vol = _volume(0)
    vol.degraded = np.asarray(vol.clean) * 0.5
    rng = np.random.default_rng(0)
    real = make_example(vol, 16, rng, margin=0)
    assert real["kinds"] == "pair"
    np.testing.assert_allclose(real["input"], real["target"] * 0.5 * real["mask"], atol=1e-4)
    synthetic = make_example(vol, 16, rng, margin=0, kinds=("noise",), synthetic=True)
    assert synthetic["kinds"] == "noise"
    assert not np.allclose(synthetic["input"], synthetic["target"] * 0.5 * synthetic["mask"], atol=1.0)


def test_synthetic_pair_crops_can_degrade_the_real_input():
    """``synthetic_source="input"`` degrades the pair's stored input, whose intensity level it keeps."""
    vol = _volume(0)
    vol.degraded = np.asarray(vol.clean) * 0.5
    from_input = make_example(vol, 16, np.random.default_rng(4), margin=0, kinds=("noise",),
                              synthetic=True, synthetic_source="input")
    from_output = make_example(vol, 16, np.random.default_rng(4), margin=0, kinds=("noise",),
                               synthetic=True)
    inside = from_input["mask"]
    level = from_input["input"][inside].mean() / from_input["target"][inside].mean()
    assert abs(level - 0.5) < 0.05  # the input's level, not the target's
    assert abs(from_output["input"][inside].mean() / from_output["target"][inside].mean() - 1) < 0.05
    assert not np.allclose(from_input["input"], from_input["target"] * 0.5 * inside, atol=1.0)


def test_split_slab_keeps_training_crops_out_of_the_slab():
    """The held-out slab is contiguous; the training parts stay ``gap`` voxels away from it."""
    from bmex_wf.training.data import slab_bounds, split_slab

    vol = _volume(0)
    vol.degraded = np.asarray(vol.clean).copy()
    start, stop = slab_bounds(vol.mask, 2, 0.4, 0.6)
    parts, held = split_slab(vol, 2, 0.4, 0.6, gap=4)
    assert held.clean.shape[2] == stop - start
    np.testing.assert_array_equal(held.clean, np.asarray(vol.clean)[:, :, start:stop])
    before, after = parts
    assert before.clean.shape[2] == start - 4 and after.clean.shape[2] == vol.clean.shape[2] - stop - 4
    assert held.degraded is not None and held.weight == vol.weight


def test_teacher_targets_replace_clean_targets_but_not_pairs(tmp_path, one_thread):
    """``--teacher``: clean volumes learn the teacher's output for them; real pairs keep theirs."""
    from bmex_wf.training.teacher import teacher_output, with_teacher_targets

    torch.manual_seed(0)
    network = build_network("enhance", 8)
    with torch.no_grad():
        for module in network.modules():
            if isinstance(module, torch.nn.BatchNorm3d):
                module.running_mean.uniform_(0, 1)
    model = tmp_path / "teacher.pt"
    torch.save(network.state_dict(), model)
    clean, pair = _volume(0), _volume(1)
    pair.degraded = np.asarray(pair.clean) * 0.5
    taught = with_teacher_targets([clean, pair], model, tmp_path / "cache", num_threads=1)
    assert taught[1] is pair and taught[0].target is not None
    expected = teacher_output(clean, load_network(model, "enhance"), num_threads=1)
    np.testing.assert_allclose(taught[0].target, expected, atol=1e-4)
    assert not np.allclose(expected, clean.clean * clean.mask, atol=1.0)
    example = make_example(taught[0], 16, np.random.default_rng(2), margin=0, kinds=("noise",))
    again = make_example(clean, 16, np.random.default_rng(2), margin=0, kinds=("noise",))
    np.testing.assert_array_equal(example["input"], again["input"])  # same crop, same degradation
    assert not np.allclose(example["target"], again["target"], atol=1.0)
    cached = list((tmp_path / "cache").glob("teacher-*/*.npy"))
    assert len(cached) == 1
    again_taught = with_teacher_targets([clean], model, tmp_path / "cache", num_threads=1)
    np.testing.assert_array_equal(again_taught[0].target, taught[0].target)
