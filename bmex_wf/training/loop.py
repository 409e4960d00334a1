"""Training loop for Network E: reconstruction L1/L2 + tissue cross-entropy, Adam.

Seeded and resumable: ``<out>/last.pt`` holds the model, optimizer, step and
best validation score (read back with ``weights_only=True``); ``<out>/best.pt``
is a plain state dict with the official key names (the normal loader reads
it). Validation uses a fixed set of degraded crops of held-out volumes and
reports PSNR and SSIM of the enhanced crops against the clean ones inside the
brain (template range 1000 as peak).
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from ..metrics import psnr, ssim
from ..models import build_network, load_network, save_network
from .data import CropStream, Volume, make_example
from .degradations import DEGRADATIONS, INTENSITY_SCALE

LOGGER = logging.getLogger(__name__)

#: Memory format of training tensors: channels-last halves the CPU cost of 3-D conv backward passes.
_FORMAT = torch.channels_last_3d


@dataclass
class TrainConfig:
    """Settings of one training run (stored in every checkpoint and in ``config.json``)."""

    width: int = 8
    crop: int = 32
    batch: int = 4
    steps: int = 20000
    lr: float = 1e-3
    min_lr: float = 1e-5
    recon_loss: str = "l1"
    recon_region: str = "brain"
    recon_weight: float = 10.0
    seg_weight: float = 0.1
    max_kinds: int = 3
    kinds: tuple = ()
    p_clean: float = 0.1
    p_synthetic_pair: float = 0.0
    synthetic_pair_source: str = "output"
    autocast: str = "none"
    seed: int = 0
    val_every: int = 250
    val_crop: int = 48
    val_per_kind: int = 2
    freeze_bn: bool = True
    scalar_lr_scale: float = 0.02
    ema_decay: float = 0.0
    calibration_batches: int = 8
    checkpoint_minutes: float = 5.0
    max_minutes: float = 0.0
    stop_step: int = 0
    device: str = "auto"
    num_threads: int = 1
    workers: int = 1


class TrainingError(ValueError):
    """Inconsistent settings or an unusable checkpoint."""


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def validation_set(volumes: list[Volume], size: int, per_kind: int, seed: int) -> list[dict]:
    """Fixed degraded crops of the validation volumes: ``per_kind`` per volume and kind."""
    rng = np.random.default_rng([seed, 7919])
    examples = []
    for vol in volumes:
        if vol.degraded is not None:  # a real pair: its own input, as many crops as the kinds
            examples += [make_example(vol, size, rng, flip=False) for _ in range(per_kind * len(DEGRADATIONS))]
        else:
            examples += [make_example(vol, size, rng, kinds=(kind,), flip=False)
                         for kind in DEGRADATIONS for _ in range(per_kind)]
    return examples


#: Autocast dtypes of ``TrainConfig.autocast`` (bf16 pays off on CPUs with native bfloat16).
AUTOCAST = {"none": None, "bf16": torch.bfloat16}


def _autocast(device: torch.device, config: TrainConfig):
    dtype = AUTOCAST[config.autocast]
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


@torch.inference_mode()
def evaluate(network: torch.nn.Module, examples: list[dict], device: torch.device) -> dict:
    """PSNR/SSIM of degraded and enhanced crops against the clean ones, overall and per kind."""
    network.eval()
    rows = []
    for ex in examples:
        x = torch.from_numpy(np.ascontiguousarray(ex["input"]))[None, None].to(device, memory_format=_FORMAT)
        recon = network(x)[1][0, 0].float().cpu().numpy()
        mask = ex["mask"]
        rows.append({"kind": ex["kinds"],
                     "psnr_in": psnr(ex["input"], ex["target"], mask),
                     "psnr_out": psnr(recon, ex["target"], mask),
                     "ssim_in": ssim(ex["input"], ex["target"], mask),
                     "ssim_out": ssim(recon, ex["target"], mask)})
    summary = {key: float(np.mean([r[key] for r in rows])) for key in ("psnr_in", "psnr_out", "ssim_in", "ssim_out")}
    summary["per_kind"] = {kind: round(float(np.mean([r["psnr_out"] - r["psnr_in"] for r in rows if r["kind"] == kind])), 3)
                           for kind in dict.fromkeys(r["kind"] for r in rows)}
    return summary


def compute_loss(network, batch: dict, config: TrainConfig, device: torch.device) -> tuple[torch.Tensor, dict]:
    """Weighted reconstruction loss (template units / 1000) plus tissue cross-entropy.

    With ``recon_region="brain"`` the reconstruction loss is averaged over the brain voxels
    of each crop only (inference masks the enhanced image, so errors outside the brain
    never matter), then over the crops.
    """
    x = batch["input"][:, None].to(device, memory_format=_FORMAT)
    target = batch["target"][:, None].to(device)
    labels = batch["labels"].to(device)
    with _autocast(device, config):
        seg, recon = network(x)
    seg, recon = seg.float(), recon.float()
    diff = (recon - target) / INTENSITY_SCALE
    error = diff.abs() if config.recon_loss == "l1" else diff**2
    weight = batch["mask"][:, None].to(device, error.dtype) if config.recon_region == "brain" \
        else torch.ones_like(error)
    per_crop = (error * weight).sum((1, 2, 3, 4)) / weight.sum((1, 2, 3, 4)).clamp(min=1.0)
    recon_loss = per_crop.mean()
    seg_loss = F.cross_entropy(seg, labels)
    loss = config.recon_weight * recon_loss + config.seg_weight * seg_loss
    return loss, {"recon": recon_loss.item(), "seg": seg_loss.item()}


#: Layers of the shortest input-to-output path of the reconstruction trunk: (conv, input
#: channel its output channel 0 copies at initialisation, BN whose channel 0 follows it).
#: The input enters through conv2_con, whose output sits after the F/2 softmax-path channels.
_IDENTITY_PATH = (("conv2_con", 0, "bn2_con"), ("conv1_recon", None, "bn1_recon"),
                  ("conv2_recon", 0, "bn4_1_recon"), ("conv5_recon", 0, None),
                  ("conv24_recon", 0, "bn27_recon"), ("conv28_recon", 0, "bn31_recon"),
                  ("conv32_recon", 0, None))
#: Bias of those BN channels: standardised values above -10 pass the ReLU unclipped.
_PASS_BIAS = 10.0


def init_recon_path(network, volumes: list[Volume], crop: int = 24, samples: int = 16, seed: int = 0) -> None:
    """Start the reconstruction output close to the (affinely rescaled) input.

    Output channel 0 of each convolution on the shortest path from the image to
    ``recon`` copies one input channel (centre tap 1, other weights of that
    channel 0), and the BNs between them get a large bias on that channel so that
    the standardised signal passes their ReLU unclipped; the last BN (``bn32_recon``) maps it
    to the mean and spread of the training targets. The other channels keep
    their random initialisation and learn the corrections, so that training
    starts from "return the input" instead of from noise (thousands of steps
    saved on a CPU budget). The key names and shapes are unchanged.
    """
    rng = np.random.default_rng(seed)
    targets = np.concatenate([make_example(volumes[int(rng.integers(len(volumes)))], crop, rng,
                                           kinds=())["target"].ravel() for _ in range(samples)])
    half = network.width // 2
    with torch.no_grad():
        for conv_name, source, bn_name in _IDENTITY_PATH:
            conv = getattr(network, conv_name)
            conv.weight[0].zero_()
            conv.weight[0, half if source is None else source, 1, 1, 1] = 1.0
            conv.bias[0] = 0.0
            if bn_name:
                bn = getattr(network, bn_name)
                bn.weight[0], bn.bias[0] = 1.0, _PASS_BIAS
        network.bn32_recon.weight.fill_(float(targets.std()))
        network.bn32_recon.bias.fill_(float(targets.mean()))


def batch_norms(network) -> list[torch.nn.BatchNorm3d]:
    """Every BatchNorm layer of ``network``."""
    return [m for m in network.modules() if isinstance(m, torch.nn.BatchNorm3d)]


@torch.no_grad()
def calibrate_batch_norms(network, batches: list[dict], device: torch.device) -> None:
    """Set every BN's running statistics to their average over ``batches`` (train-mode passes)."""
    norms = batch_norms(network)
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    network.train()
    for batch in batches:
        network(batch["input"][:, None].to(device, memory_format=_FORMAT))
    for norm in norms:
        norm.momentum = 0.1


@torch.no_grad()
def fit_output_affine(network, batches: list[dict], device: torch.device) -> float:
    """Set ``bn32_recon``'s weight and bias so that, in eval mode, ``recon`` best fits the input.

    After :func:`init_recon_path` and :func:`calibrate_batch_norms` the value entering
    ``bn32_recon`` is an affine function of the input, so the least-squares fit makes
    the initial network the identity. Returns the RMS residual (template units).
    """
    norm = network.bn32_recon
    captured, inputs = [], []
    handle = norm.register_forward_hook(lambda module, args, out: captured.append(args[0].flatten()))
    network.eval()
    try:
        for batch in batches:
            x = batch["input"][:, None].to(device, memory_format=_FORMAT)
            network(x)
            inputs.append(x.flatten())
    finally:
        handle.remove()
    h = torch.cat(captured).double()
    z = (h - norm.running_mean[0].double()) / torch.sqrt(norm.running_var[0].double() + norm.eps)
    x = torch.cat(inputs).double()
    design = torch.stack([z, torch.ones_like(z)], 1)
    weight, bias = torch.linalg.lstsq(design, x[:, None]).solution[:, 0].tolist()
    norm.weight[0], norm.bias[0] = weight, bias
    return float(torch.sqrt(torch.mean((weight * z + bias - x) ** 2)))


def param_groups(network, config: TrainConfig) -> list[dict]:
    """Adam parameter groups: conv weights at the full rate, biases and BN scales slower.

    Starting from the identity (``freeze_bn``), one bias or BN scale on the image path
    shifts or scales the whole output (about 300 template units per unit), and Adam moves
    every parameter by about the learning rate per step whatever its gradient.
    ``scalar_lr_scale`` slows these scalars. Measured on the built-in model's data: after
    100-300 steps the output had drifted by a global offset of -12 to +28 units inside the
    brain, and slowing the scalars by 0.02 barely changed it (validation 28.91 vs 28.88 dB at
    step 275): the offset is learnt through the convolution weights, as the average
    correction that the degradation kinds ask for.
    """
    scale = config.scalar_lr_scale if config.freeze_bn else 1.0
    params = list(network.parameters())
    return [{"params": [p for p in params if p.ndim > 1], "scale": 1.0},
            {"params": [p for p in params if p.ndim <= 1], "scale": scale}]


def weight_average(network, config: TrainConfig, state: dict | None = None):
    """Exponential moving average of ``network``'s weights (``ema_decay``), or None when 0.

    Near the identity start, single Adam steps move the output by several template units,
    so the weights of any one step are a noisy sample; their average is what gets validated
    and exported. ``state`` restores the average of a resumed run.
    """
    if not config.ema_decay:
        return None
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    ema = AveragedModel(network, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
    if state is not None:
        ema.load_state_dict(state)
    return ema


def _lr(step: int, config: TrainConfig) -> float:
    """Cosine decay from ``lr`` to ``min_lr`` over ``steps``, after a 50-step warm-up."""
    warm = min(1.0, (step + 1) / 50)
    progress = min(step / max(config.steps, 1), 1.0)
    return warm * (config.min_lr + 0.5 * (config.lr - config.min_lr) * (1 + math.cos(math.pi * progress)))


def save_checkpoint(path: Path, network, optimizer, step: int, best: float, config: TrainConfig,
                    history: list, ema=None) -> None:
    """Write the resumable training state atomically (``ema``: the weight average, if any)."""
    state = {"model": network.state_dict(), "optimizer": optimizer.state_dict(), "step": step,
             "best_psnr": best, "config": asdict(config), "history": history}
    if ema is not None:
        state["ema"] = ema.state_dict()
    tmp = path.with_name(path.name + ".part")
    torch.save(state, tmp)
    tmp.replace(path)


def load_checkpoint(path: Path) -> dict:
    """Read a training checkpoint written by :func:`save_checkpoint`."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for corrupt files
        raise TrainingError(f"{path}: not a readable training checkpoint ({exc})") from None
    if not isinstance(state, dict) or not {"model", "optimizer", "step", "config"} <= set(state):
        raise TrainingError(f"{path}: not a training checkpoint (expected model/optimizer/step/config)")
    return state


def best_validation_step(run_dir) -> tuple[int, int]:
    """The step at which a run's validation scored best, and that run's schedule (``steps``).

    Read from ``run_dir/last.pt``; the identity start (step 0) is no candidate, and of equal
    scores the first counts, as it is the one :func:`train` saved as ``best.pt``.
    """
    state = load_checkpoint(Path(run_dir) / "last.pt")
    validations = [row for row in state["history"] if "psnr_out" in row and row["step"] > 0]
    if not validations:
        raise TrainingError(f"{run_dir}: the run has no validation after its start to take a step from")
    return max(validations, key=lambda row: row["psnr_out"])["step"], int(state["config"]["steps"])


def train(train_volumes: list[Volume], val_volumes: list[Volume], config: TrainConfig, out_dir,
          resume: bool = True, progress: bool = True) -> dict:
    """Train Network E of ``config.width`` on random degraded crops.

    Parameters
    ----------
    train_volumes, val_volumes : list of Volume
        Prepared volumes (:func:`bmex_wf.training.data.prepare_volume`).
    config : TrainConfig
        Settings; on resume, those stored in the checkpoint must agree on width.
    out_dir : path
        Receives ``last.pt``, ``best.pt``, ``config.json`` and ``history.jsonl``.
    resume : bool
        Continue from ``out_dir/last.pt`` when it exists.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    dict
        ``step``, ``best_psnr``, ``last_val`` (the last validation summary), ``best`` (path).
    """
    from tqdm import tqdm

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.device)
    if device.type == "cpu" and config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    network = build_network("enhance", config.width).to(device, memory_format=_FORMAT)
    optimizer = torch.optim.Adam(param_groups(network, config), lr=config.lr)
    step, best, history, state = 0, -math.inf, [], {}
    last_file, best_file = out_dir / "last.pt", out_dir / "best.pt"
    if resume and last_file.is_file():
        state = load_checkpoint(last_file)
        if state["config"]["width"] != config.width:
            raise TrainingError(f"{last_file}: width {state['config']['width']} differs from --width "
                                f"{config.width}; use another output folder")
        network.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, best, history = state["step"], state["best_psnr"], list(state.get("history", []))
        LOGGER.info("resumed from %s at step %d (best validation PSNR %.3f dB)", last_file, step, best)
    else:
        init_recon_path(network, train_volumes, config.crop, seed=config.seed)
    (out_dir / "config.json").write_text(json.dumps(asdict(config), indent=1))

    val_examples = validation_set(val_volumes, config.val_crop, config.val_per_kind, config.seed) \
        if val_volumes else []
    stream = CropStream(train_volumes, config.crop, config.seed, start_step=step,
                        max_kinds=config.max_kinds, p_clean=config.p_clean,
                        p_synthetic_pair=config.p_synthetic_pair,
                        synthetic_pair_source=config.synthetic_pair_source, kinds=config.kinds)
    loader = torch.utils.data.DataLoader(stream, batch_size=config.batch, num_workers=config.workers,
                                         collate_fn=collate_examples, persistent_workers=config.workers > 0)
    batches = iter(loader)
    if step == 0 and config.freeze_bn:
        calibration = [next(batches) for _ in range(config.calibration_batches)]
        calibrate_batch_norms(network, calibration, device)
        residual = fit_output_affine(network, calibration, device)
        LOGGER.info("BN statistics calibrated on %d batches; initial network = identity (RMS %.3g)",
                    len(calibration), residual)
    ema = weight_average(network, config, state.get("ema") if step else None)
    judged = ema.module if ema is not None else network  # validated and exported
    started = last_save = time.monotonic()
    last_val = None
    bar = tqdm(total=config.steps, initial=step, disable=not progress, mininterval=10, desc="train")
    running = []
    if step == 0 and val_examples:  # the identity start: a baseline, never exported as best
        last_val, best = _validate(judged, val_examples, device, step, best, history, best_file,
                                   candidate=False)
    norms = batch_norms(network)
    for batch in batches:
        if step >= (config.stop_step or config.steps) or (
                config.max_minutes and time.monotonic() - started > 60 * config.max_minutes):
            break
        network.train()
        if config.freeze_bn:  # fixed statistics: BN layers act as per-channel affine maps
            for norm in norms:
                norm.eval()
        for group in optimizer.param_groups:
            group["lr"] = _lr(step, config) * group["scale"]
        loss, parts = compute_loss(network, batch, config, device)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if ema is not None:
            ema.update_parameters(network)
        step += 1
        running.append(loss.item())
        bar.update(1)
        bar.set_postfix(loss=f"{np.mean(running[-50:]):.4f}", refresh=False)
        if step % 50 == 0:
            LOGGER.info("step %d loss %.5f (recon %.5f seg %.4f) lr %.2e", step, np.mean(running[-50:]),
                        parts["recon"], parts["seg"], _lr(step, config))
            history.append({"step": step, "loss": float(np.mean(running[-50:]))})
        if val_examples and (step % config.val_every == 0 or step == config.steps):
            last_val, best = _validate(judged, val_examples, device, step, best, history, best_file)
        if time.monotonic() - last_save > 60 * config.checkpoint_minutes:
            save_checkpoint(last_file, network, optimizer, step, best, config, history, ema)
            last_save = time.monotonic()
    bar.close()
    save_checkpoint(last_file, network, optimizer, step, best, config, history, ema)
    if not val_examples:
        save_network(judged.eval(), best_file)
    with open(out_dir / "history.jsonl", "w") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in history)
    minutes = (time.monotonic() - started) / 60
    if val_examples:
        LOGGER.info("stopped at step %d after %.1f min; best validation PSNR %.3f dB", step, minutes, best)
    else:
        LOGGER.info("stopped at step %d after %.1f min (no validation: best.pt is the last weights)",
                    step, minutes)
    return {"step": step, "best_psnr": best, "last_val": last_val, "best": best_file}


def _validate(network, examples, device, step: int, best: float, history: list, best_file: Path,
              candidate: bool = True):
    """Evaluate, log, record; save ``best_file`` on a new best PSNR. Returns (summary, best).

    ``candidate=False`` only logs and records (the untrained start: on nearly clean crops
    the identity often scores a higher mean PSNR than any trained weights).
    """
    summary = evaluate(network, examples, device)
    history.append({"step": step, **summary})
    LOGGER.info("step %d validation PSNR %.3f dB (input %.3f) SSIM %.4f (input %.4f) per kind %s",
                step, summary["psnr_out"], summary["psnr_in"], summary["ssim_out"], summary["ssim_in"],
                summary["per_kind"])
    if candidate and summary["psnr_out"] > best:
        best = summary["psnr_out"]
        save_network(network.eval(), best_file)
        LOGGER.info("new best model %s", best_file)
    return summary, best


def collate_examples(examples: list[dict]) -> dict:
    """Stack examples of :func:`~bmex_wf.training.data.make_example` into one batch."""
    batch = {k: torch.stack([torch.as_tensor(e[k]) for e in examples])
             for k in ("input", "target", "labels", "mask")}
    batch["kinds"] = [e["kinds"] for e in examples]
    return batch


def export_model(checkpoint, out_file, half: bool = False) -> Path:
    """Export a trained model (``best.pt`` state dict or a ``last.pt`` training checkpoint).

    The result is a plain state dict with the official key names, floating tensors
    stored as float16 when ``half``; it is re-read with the normal loader to check it.
    A compact network starting from the identity is sensitive to rounding: float16
    storage cost a width-8 model 0.8 dB on nearly clean (gamma) crops, so float32 is
    the default.
    """
    checkpoint = Path(checkpoint)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "model" in state and "optimizer" in state:
        state = ({k.removeprefix("module."): v for k, v in state["ema"].items() if k != "n_averaged"}
                 if "ema" in state else state["model"])
    width = int(state["conv1.weight"].shape[0])
    network = build_network("enhance", width)
    network.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    out = save_network(network, out_file, half=half)
    load_network(out, "enhance")
    return out
