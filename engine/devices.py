"""Devices for every entry point (``auto`` → cuda, then mps, then cpu) and the one mixed-precision
policy both pipelines use."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads only when a device is resolved: `normlab --help` stays fast
    import torch

DEVICE_CHOICES = ("auto", "cpu", "cuda", "mps")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """Turn ``auto``/``cpu``/``cuda[:i]``/``mps`` into a ``torch.device``; ``ValueError`` when the
    requested device is not available here."""
    import torch

    if isinstance(name, torch.device):
        return name
    name = (name or "auto").strip().lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {name!r} requested but CUDA is not available here "
                             "(use --device cpu or auto)")
        return torch.device(name)
    if name == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise ValueError("device 'mps' requested but MPS is not available here")
        return torch.device("mps")
    if name == "cpu":
        return torch.device("cpu")
    raise ValueError(f"unknown device {name!r}; choose from {', '.join(DEVICE_CHOICES)} or cuda:N")


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype for ``device`` (one policy for every pipeline): bf16 where the device
    supports it (CPU, recent CUDA GPUs), fp16 elsewhere on CUDA (with a ``GradScaler``)."""
    import torch

    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16


def grad_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    """A ``GradScaler`` that is active only for fp16 autocast on CUDA (bf16 needs none)."""
    import torch

    on = enabled and device.type == "cuda" and amp_dtype(device) == torch.float16
    return torch.amp.GradScaler("cuda", enabled=on)


def autocast_pays(device: torch.device) -> bool:
    """Whether bf16/fp16 autocast makes training faster on ``device``: on CUDA, and on a CPU
    with native bf16 (a CIFAR ResNet-20 step 0.5–0.65× the float32 time, measured on a 2-core
    EPYC VM); not on MPS, nor on a CPU that would emulate bf16 (slower than float32)."""
    if device.type == "cuda":
        return True
    return device.type == "cpu" and cpu_native_bf16()


def cpu_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX-512 BF16 or AMX). Without it bf16 autocast
    is emulated and slower than float32 (measured 6–8× slower in ``stylize bench``)."""
    import torch

    for probe in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        fn = getattr(torch.cpu, probe, None)
        try:
            if fn is not None and fn():
                return True
        except Exception:  # private probes: absent or failing on some builds
            pass
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags
