"""Inference speed: float32 eager vs the fast path (inference_mode, channels_last, bf16 autocast
where the output stays within PSNR ≥ 40 dB of float32, optionally torch.compile), as ratios to
the float32 eager time measured in the same run."""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import torch

from engine.devices import resolve_device

from .model import TransformerNet

PSNR_MIN = 40.0


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR (dB) of two 0–255 images after clamping, as they would be saved."""
    mse = (a.float().clamp(0, 255) - b.float().clamp(0, 255)).pow(2).mean().item()
    return float("inf") if mse == 0 else 10 * torch.log10(torch.tensor(255.0 ** 2 / mse)).item()


def _time(fn: Callable[[], torch.Tensor], repeats: int, device: torch.device) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up (and compile)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000, out


def bench(model: str | None, sizes: list[int], repeats: int = 3, compile: bool = False,
          device: str = "auto") -> list[dict[str, Any]]:
    """Rows {size, variant, ms, ratio, psnr_db, used}; ``used`` says whether the variant would be
    chosen (bf16 only when its PSNR against float32 is ≥ 40 dB)."""
    dev = resolve_device(device)
    if model:
        from .infer import load_model

        net = load_model(model, device=dev).net
    else:
        torch.manual_seed(0)
        net = TransformerNet(norm="in").to(dev)
    net.eval()
    rows: list[dict[str, Any]] = []
    for s in sizes:
        g = torch.Generator().manual_seed(s)
        x = (torch.rand(1, 3, s, s, generator=g) * 255).to(dev)

        def eager():
            with torch.no_grad():
                return net(x)

        xc = x.contiguous(memory_format=torch.channels_last)
        net_cl = net.to(memory_format=torch.channels_last)

        def fast_fp32():
            with torch.inference_mode():
                return net_cl(xc)

        def fast_bf16():
            with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16):
                return net_cl(xc).float()

        base_ms, ref = _time(eager, repeats, dev)
        net.to(memory_format=torch.contiguous_format)
        rows.append({"size": s, "variant": "fp32 eager", "ms": base_ms, "ratio": 1.0,
                     "psnr_db": float("inf"), "used": True})
        variants = [("fast fp32 (inference_mode + channels_last)", fast_fp32),
                    ("fast bf16 (+ autocast)", fast_bf16)]
        if compile:
            compiled = torch.compile(net_cl)

            def fast_compiled():
                with torch.inference_mode(), torch.autocast(dev.type, dtype=torch.bfloat16):
                    return compiled(xc).float()

            variants.append(("fast bf16 + torch.compile", fast_compiled))
        for name, fn in variants:
            net.to(memory_format=torch.channels_last)
            ms, out = _time(fn, repeats, dev)
            net.to(memory_format=torch.contiguous_format)
            q = psnr(out, ref)
            rows.append({"size": s, "variant": name, "ms": ms, "ratio": ms / base_ms,
                         "psnr_db": q, "used": q >= PSNR_MIN})
    return rows


def to_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| size | variant | ms/image | × fp32 eager | PSNR vs fp32 (dB) | quality ok (≥ 40 dB) |",
             "|---:|---|---:|---:|---:|---|"]
    for r in rows:
        q = "—" if r["psnr_db"] == float("inf") else f"{r['psnr_db']:.1f}"
        lines.append(f"| {r['size']}² | {r['variant']} | {r['ms']:.0f} | {r['ratio']:.2f} | {q} | "
                     f"{'yes' if r['used'] else 'no'} |")
    return "\n".join(lines)
