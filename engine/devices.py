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


AMP_AUTO = "auto"
AMP_CHOICES = (AMP_AUTO, True, False)
AMP_HELP = ("Mixed precision: auto (bf16 autocast on a CUDA GPU that computes bf16 natively, "
            "else off: float32 on CPU, the same numbers on every machine), true (bf16 where "
            "supported — a CPU with AVX-512 BF16 or AMX trains ~1.5-2x faster — else fp16 with "
            "loss scaling) or false.")


def resolve_amp(amp: bool | str | None, device: torch.device) -> bool:
    """Whether a run autocasts: ``True``/``False`` as given; ``"auto"`` (or None) on a CUDA GPU
    that computes bf16 natively (``native_bf16``), not on a CPU even with native bf16: there
    bf16 changes a run's numbers by far more than float32 noise (a 2-process torchrun ResNet-20
    BIN run differs from one process by 5e-2 instead of ~1e-5; tests/test_distributed.py) and
    would make a default run depend on the CPU it ran on. One-line ``ValueError`` otherwise."""
    check_amp(amp)
    return amp if isinstance(amp, bool) else (device.type == "cuda" and native_bf16(device))


def check_amp(amp: bool | str | None) -> None:
    """One-line ``ValueError`` unless ``amp`` is True, False, ``"auto"`` or None (= auto)."""
    if not (isinstance(amp, bool) or amp is None or
            (isinstance(amp, str) and amp.strip().lower() == AMP_AUTO)):
        raise ValueError(f"amp must be auto, true or false, got {amp!r}")


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bf16 natively (autocast then costs no accuracy-for-emulation
    trade): a CUDA GPU with bf16 support, or a CPU with AVX-512 BF16 / AMX
    (``cpu_native_bf16``); not MPS, not an older GPU (fp16 there needs loss scaling)."""
    if device.type == "cuda":
        import torch

        try:  # torch ≥ 2.3 counts emulated bf16 (pre-Ampere GPUs) unless told not to
            return bool(torch.cuda.is_bf16_supported(including_emulation=False))
        except TypeError:
            return bool(torch.cuda.is_bf16_supported())
    return device.type == "cpu" and cpu_native_bf16()


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


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none, e.g. macOS)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_model_name() -> str:
    """The CPU's model name (for probe cache keys and bench headers); ``platform`` elsewhere."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def no_accelerator_here() -> bool:
    """True when ``--device auto`` must resolve to the CPU, decided without importing torch: no
    NVIDIA/AMD device node and not macOS (MPS). False means "maybe": resolve with torch."""
    import os
    import sys

    if sys.platform == "darwin":
        return False
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None and \
            os.environ["CUDA_VISIBLE_DEVICES"].strip() in ("", "-1"):
        return True
    nodes = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")
    return not any(os.path.exists(n) for n in nodes)


def _read_int(path: str) -> int | None:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max" (no limit) → None


def _cgroup_limits() -> list[tuple[str, str]]:
    """(limit file, usage file) of this process's memory cgroup and its parents: cgroup v2
    (``memory.max`` / ``memory.current``; a container's limit is often a level up) and v1
    (``memory.limit_in_bytes`` / ``memory.usage_in_bytes``)."""
    import os

    out: list[tuple[str, str]] = []
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return out
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            root, files = "/sys/fs/cgroup", ("memory.max", "memory.current")
        elif "memory" in parts[1].split(","):
            root, files = "/sys/fs/cgroup/memory", ("memory.limit_in_bytes", "memory.usage_in_bytes")
        else:
            continue
        d = (root + parts[2]).rstrip("/")
        for _ in range(8):
            out.append((f"{d}/{files[0]}", f"{d}/{files[1]}"))
            if len(d) <= len(root):
                break
            d = os.path.dirname(d)
    return out


def host_memory_available() -> tuple[int, str]:
    """(bytes this process may still allocate, what limits it): the smallest of the host's
    available RAM, the room left under the cgroup v2 ``memory.max`` of this process's cgroup (and
    its parents; v1 too), and the address space left under
    ``RLIMIT_AS`` (``ulimit -v``). Torch-free."""
    import os

    import psutil

    best, why = int(psutil.virtual_memory().available), "available RAM"
    for limit_file, usage_file in _cgroup_limits():
        top, cur = _read_int(limit_file), _read_int(usage_file)
        if top is not None and cur is not None and top < 2**60 and top - cur < best:
            best, why = max(0, top - cur), f"cgroup memory limit ({top / 2**30:.1f} GiB)"
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft not in (resource.RLIM_INFINITY, -1) and soft > 0:
            left = soft - int(psutil.Process().memory_info().vms)
            if left < best:
                best, why = max(0, left), f"ulimit -v ({soft / 2**30:.1f} GiB address space)"
    except (ImportError, ValueError, OSError):
        pass
    return best, why
