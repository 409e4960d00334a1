"""Numerical precision per device and per network (autocast dtype, float32 tail).

Rule for ``precision="auto"``: a network runs in bfloat16 by default only where its recorded
bf16-vs-float32 recon PSNR reaches :data:`BF16_MIN_PSNR_DB` (45 dB): all of it in bf16 if that
reaches it, else with the reconstruction trunk's last layers in float32 (``bf16-tail32``),
else with the connection and the whole reconstruction trunk in float32 (``bf16-recon32``, only
the segmentation trunk in bf16); failing all three it runs in float32. On CPU bfloat16 is used only where the CPU computes it natively (AVX512-BF16 or
AMX); on CUDA where the GPU supports it, else float16. Figures are recorded per checkpoint
(SHA-256 of the file) in the package data ``precision.json``, measured with
``benchmarks/bench_inference.py --precision-only`` (benchmarks/README.md): a network whose
file has no figure, or that was not loaded from a file, runs in float32 by default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import torch

#: Lowest bf16-vs-float32 recon PSNR (dB) at which bfloat16 becomes a network's default.
BF16_MIN_PSNR_DB = 45.0

_DTYPES = {
    "fp32": None, "float32": None,
    "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
    "fp16": torch.float16, "float16": torch.float16,
}
#: Network parts that can stay in float32 under bf16, in the order the rule tries them.
FLOAT32_PARTS = ("tail", "recon")
#: Precision names accepted by :func:`resolve_precision` besides ``"auto"``.
PRECISIONS = ("fp32", "bf16", "bf16-tail32", "bf16-recon32", "fp16")


@dataclass(frozen=True)
class Precision:
    """Autocast dtype (``None``: float32) and the network part kept in float32 (``tail``, ``recon``)."""

    dtype: torch.dtype | None
    fp32_part: str | None = None

    @property
    def name(self) -> str:
        base = precision_name(self.dtype)
        return f"{base}-{self.fp32_part}32" if self.fp32_part and self.dtype is not None else base


def precision_name(dtype: torch.dtype | None) -> str:
    """Short name of an autocast dtype (``fp32`` for ``None``)."""
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


#: SIMD flags of /proc/cpuinfo that benchmarks report with their figures.
REPORTED_CPU_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni",
                      "avx512_bf16", "amx_bf16", "amx_tile")


def _cpuinfo_field(name: str) -> str:
    """The first ``name`` field of /proc/cpuinfo ('' where there is none)."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists():
        return ""
    for line in cpuinfo.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip() == name:
            return value.strip()
    return ""


def _cpu_flags() -> set[str]:
    return set(_cpuinfo_field("flags").split())


def machine_line() -> str:
    """``# CPU <model>; flags <SIMD flags>; torch <version> CPU capability <...>; <n> threads``."""
    import platform

    model = _cpuinfo_field("model name") or platform.processor() or "unknown CPU"
    flags = _cpu_flags()
    present = (" ".join(f for f in REPORTED_CPU_FLAGS if f in flags)
               or "none of " + " ".join(REPORTED_CPU_FLAGS))
    return (f"# CPU {model}; flags {present}; torch {torch.__version__} CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()}; {torch.get_num_threads()} threads")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively: oneDNN bf16 on AVX-512 plus AVX512-BF16 or AMX."""
    if torch.backends.cpu.get_cpu_capability() != "AVX512" or not torch.backends.mkldnn.is_available():
        return False
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return False
    return bool(_cpu_flags() & {"avx512_bf16", "amx_bf16"})


@lru_cache(maxsize=1)
def _records() -> dict:
    text = resources.files("bmex_wf.data").joinpath("precision.json").read_text()
    return json.loads(text)["networks"]


def recorded_fidelity(sha256: str | None) -> dict | None:
    """The recorded bf16 figures of the checkpoint with this SHA-256 (``None``: not measured)."""
    return _records().get(sha256) if sha256 else None


def bf16_default(record: dict | None) -> Precision:
    """The default precision a fidelity ``record`` allows: bf16, bf16-tail32, bf16-recon32 or float32.

    ``record`` holds ``bf16_psnr_db`` and optionally ``bf16_tail32_psnr_db`` and
    ``bf16_recon32_psnr_db`` (recon PSNR against float32); the first to reach
    :data:`BF16_MIN_PSNR_DB` wins.
    """
    for part in (None, *FLOAT32_PARTS):
        key = f"bf16_{part}32_psnr_db" if part else "bf16_psnr_db"
        if record and (record.get(key) or -1.0) >= BF16_MIN_PSNR_DB:
            return Precision(torch.bfloat16, part)
    return Precision(None)


def resolve_precision(precision: str, device: torch.device, record: dict | None = None) -> Precision:
    """The :class:`Precision` for ``precision`` on ``device`` for a network with fidelity ``record``.

    ``"auto"``: :func:`bf16_default` of ``record`` where the device runs bfloat16 natively
    (on CUDA without bfloat16, float16 stands in for it), else float32. Explicit names
    (:data:`PRECISIONS`) are taken as given.
    """
    if precision == "auto":
        chosen = bf16_default(record)
        if chosen.dtype is None:
            return chosen
        if device.type == "cuda":
            return chosen if torch.cuda.is_bf16_supported() else Precision(torch.float16, chosen.fp32_part)
        return chosen if cpu_has_native_bf16() else Precision(None)
    for part in FLOAT32_PARTS:
        if precision == f"bf16-{part}32":
            return Precision(torch.bfloat16, part)
    if precision not in _DTYPES:
        raise ValueError(f"unknown precision {precision!r}; use 'auto' or one of {PRECISIONS}")
    return Precision(_DTYPES[precision])


def network_precision(network: torch.nn.Module, precision: str, device: torch.device) -> Precision:
    """:func:`resolve_precision` for ``network``, from the figures recorded for its file."""
    return resolve_precision(precision, device, recorded_fidelity(getattr(network, "weights_sha256", None)))
