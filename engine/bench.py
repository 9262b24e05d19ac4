"""The benchmark harness every ``bench`` command uses (median timings with the device
synchronised, norms interleaved round by round, PSNR for fast paths), and the norm benchmarks
(``normlab norms bench``): each registered norm as a ratio to BatchNorm2d measured in the same
run, plus a whole-network training step with each norm."""
from __future__ import annotations

import json
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from norms import NORM_NAMES, attach_gate_clipping, create_norm, param_groups
from norms.functional import batch_instance_norm_reference


class NaiveBIN(nn.Module):
    """BIN written from eq. (3) as the official code does (full BN + full IN, mixed): the
    baseline the fused layer is compared against."""

    def __init__(self, num_channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.gate = nn.Parameter(torch.ones(num_channels))
        self.register_buffer("running_mean", torch.zeros(num_channels))
        self.register_buffer("running_var", torch.ones(num_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return batch_instance_norm_reference(x, self.weight, self.bias, self.gate,
                                             self.running_mean, self.running_var, self.training)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of two 0–255 images after clamping, as they would be saved."""
    mse = (a.float().clamp(0, 255) - b.float().clamp(0, 255)).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(255.0 ** 2 / mse)).item()


def time_ms(fn: Callable[[], object], device: torch.device, repeats: int, warmup: int = 3) -> float:
    """Median wall time of ``fn`` in milliseconds (device synchronised around each call)."""
    for _ in range(warmup):
        fn()
    _sync(device)
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        samples.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(samples)


@dataclass
class LayerTiming:
    norm: str
    device: str
    shape: tuple[int, ...]
    fwd_ms: float
    fwd_bwd_ms: float
    fwd_ratio: float = 1.0
    fwd_bwd_ratio: float = 1.0


def bench_layers(device: torch.device, shape: tuple[int, int, int, int] = (16, 64, 64, 64),
                 norms: tuple[str, ...] = NORM_NAMES, repeats: int = 20,
                 progress: Callable[[str], None] | None = None) -> list[LayerTiming]:
    """Forward and forward+backward time of each norm layer (training mode) on one input,
    plus ``bin_naive`` (eq. 3 written naively), with ratios to ``bn``. The layers are timed
    interleaved, one call each per round, so drifting machine load hits all of them alike."""
    torch.manual_seed(0)
    x = torch.randn(*shape, device=device)
    g = torch.randn(*shape, device=device)
    names = list(dict.fromkeys(("bn",) + tuple(norms) + ("bin_naive",)))
    calls: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {}
    for name in names:
        layer = NaiveBIN(shape[1]) if name == "bin_naive" else create_norm(name, shape[1])
        layer = layer.to(device).train()
        xr = x.clone().requires_grad_()

        def fwd(layer=layer) -> None:
            with torch.no_grad():
                layer(x)

        def fwd_bwd(layer=layer, xr=xr) -> None:
            xr.grad = None
            layer(xr).backward(g)

        for _ in range(3):  # warm-up: allocator, first-call dispatch
            fwd(), fwd_bwd()
        calls[name] = (fwd, fwd_bwd)
    f_ms: dict[str, list[float]] = {n: [] for n in names}
    fb_ms: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(repeats):
        for name in names:
            if progress:
                progress(name)
            fwd, fwd_bwd = calls[name]
            f_ms[name].append(time_ms(fwd, device, repeats=1, warmup=0))
            fb_ms[name].append(time_ms(fwd_bwd, device, repeats=1, warmup=0))
    rows = [LayerTiming(n, device.type, tuple(shape), statistics.median(f_ms[n]),
                        statistics.median(fb_ms[n])) for n in names]
    for r in rows:
        r.fwd_ratio = r.fwd_ms / rows[0].fwd_ms
        r.fwd_bwd_ratio = r.fwd_bwd_ms / rows[0].fwd_bwd_ms
    return rows


@dataclass
class StepTiming:
    norm: str
    device: str
    model: str
    batch: int
    step_ms: float
    ratio: float = 1.0


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precisions(precisions: tuple[str, ...]) -> None:
    """One-line ``ValueError`` for a precision name that ``bench_train_step`` does not know."""
    bad = [p for p in precisions if p not in PRECISIONS]
    if bad:
        raise ValueError(f"unknown precision(s) {', '.join(bad)}; known: {', '.join(PRECISIONS)}")


def bench_train_step(build: Callable[[str], nn.Module], device: torch.device, norms: tuple[str, ...],
                     model_name: str = "resnet20", batch: int = 128, image: int = 32,
                     classes: int = 10, repeats: int = 8,
                     progress: Callable[[str], None] | None = None,
                     precisions: tuple[str, ...] = ("fp32",)) -> list[StepTiming]:
    """Time one SGD training step (forward, loss, backward, step with gate clipping) of
    ``build(norm)`` for each norm and precision (``fp32``, or ``bf16``/``fp16`` autocast), with
    ratios to float32 ``bn``. Variants are timed interleaved, round by round, so drifting
    machine load hits all of them alike."""
    check_precisions(precisions)
    torch.manual_seed(0)
    x = torch.randn(batch, 3, image, image, device=device)
    y = torch.randint(0, classes, (batch,), device=device)
    norms_ = list(dict.fromkeys(("bn",) + tuple(norms)))
    precs = list(dict.fromkeys(("fp32",) + tuple(precisions)))
    names = [(n, p) for p in precs for n in norms_]  # [0] is float32 BN, the baseline
    steps = {}
    for name, prec in names:
        model = build(name).to(device).train()
        opt = torch.optim.SGD(param_groups(model, 0.1, 1e-4), lr=0.1, momentum=0.9)
        attach_gate_clipping(opt, model)
        dtype = PRECISIONS[prec]

        def step(model=model, opt=opt, dtype=dtype) -> None:
            opt.zero_grad(set_to_none=True)
            with torch.autocast(device.type, dtype=dtype or torch.float32,
                                enabled=dtype is not None):
                logits = model(x)
            nn.functional.cross_entropy(logits.float(), y).backward()
            opt.step()

        for _ in range(2):
            step()
        steps[name, prec] = step
    samples: dict[tuple[str, str], list[float]] = {k: [] for k in names}
    for _ in range(repeats):
        for k in names:
            if progress:
                progress(k[0] if k[1] == "fp32" else f"{k[0]} {k[1]}")
            samples[k].append(time_ms(steps[k], device, repeats=1, warmup=0))
    rows = [StepTiming(n if p == "fp32" else f"{n} ({p})", device.type, model_name, batch,
                       statistics.median(samples[n, p])) for n, p in names]
    for r in rows:
        r.ratio = r.step_ms / rows[0].step_ms
    return rows


def layer_table(rows: list[LayerTiming]) -> str:
    out = ["| device | norm | input | fwd ms | fwd ×BN | fwd+bwd ms | fwd+bwd ×BN |",
           "|---|---|---|---:|---:|---:|---:|"]
    for r in rows:
        shape = "×".join(map(str, r.shape))
        out.append(f"| {r.device} | {r.norm} | {shape} | {r.fwd_ms:.2f} | {r.fwd_ratio:.2f} | "
                   f"{r.fwd_bwd_ms:.2f} | {r.fwd_bwd_ratio:.2f} |")
    return "\n".join(out)


def step_table(rows: list[StepTiming]) -> str:
    out = ["| device | model | batch | norm | train step ms | ×BN |", "|---|---|---:|---|---:|---:|"]
    for r in rows:
        out.append(f"| {r.device} | {r.model} | {r.batch} | {r.norm} | {r.step_ms:.1f} | "
                   f"{r.ratio:.2f} |")
    return "\n".join(out)


def to_json(layers: list[LayerTiming], steps: list[StepTiming]) -> str:
    return json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(),
                       "layers": [asdict(r) for r in layers], "steps": [asdict(r) for r in steps]},
                      indent=2)
