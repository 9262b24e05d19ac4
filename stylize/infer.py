"""Loading style models (shipped name, .safetensors, pytorch/examples .pth) and stylizing images:
size limits, any size in bounded memory (thumbnail-statistics tiles, ``stylize.tiling``), colour
preservation, strength and BIN gate overrides."""
from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

import torch
from PIL import Image, ImageDraw, ImageFont

import norms
import weights
import engine.io
from engine.devices import resolve_device

from engine.images import _to_rgb_or_rgba, to_image, to_tensor
from .model import (StyleConfig, TransformerNet, load_examples_pth, load_style_net, style_names,
                    use_style)


@dataclass
class StyleModel:
    """A loaded style network with its config, display name and checkpoint metadata."""

    net: TransformerNet
    config: StyleConfig
    name: str
    meta: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def has_gates(self) -> bool:
        """True for BIN-like models whose ρ can be overridden with ``gate``."""
        return any(True for _ in norms.iter_gates(self.net))


_CACHE: dict[tuple[str, float, str], StyleModel] = {}


def list_models() -> list[str]:
    """Names of the shipped style models (weights/manifest.json, kind "stylize")."""
    return weights.names("stylize")


def _resolve(spec: str | Path) -> tuple[Path, str]:
    s = str(spec)
    if s in list_models():
        return weights.path(s, "stylize"), s
    p = Path(s)
    if p.is_file():  # a run's model.safetensors is named after its run folder
        return p, (p.parent.name if p.stem == "model" and p.parent.name else p.stem)
    shipped = ", ".join(list_models()) or "none"
    if s in weights.names("classify"):
        e = weights.manifest()[s]
        raise ValueError(f"{s} is a shipped classifier ({e.get('arch')}, {e.get('norm')}), not a "
                         f"style model (shipped style models: {shipped})")
    if p.exists():  # a folder, FIFO or device
        raise ValueError(f"{s} is a {engine.io.file_type(p)}, not a model file")
    if p.suffix.lower() in (".safetensors", ".pth", ".pt", ".model") or "/" in s or "\\" in s:
        raise ValueError(f"model file {s} not found (shipped models: {shipped})")
    raise ValueError(f"no style model {engine.io.clip(repr(s))}: give a shipped name ({shipped}), a .safetensors "
                     "file or a pytorch/examples .pth file")


def load_model(spec: str | Path, device: str | torch.device = "cpu") -> StyleModel:
    """A shipped model name, a ``.safetensors`` file written by ``stylize train`` or a
    pytorch/examples ``.pth``; cached per (file, mtime, device)."""
    path, name = _resolve(spec)
    dev = resolve_device(device)
    key = (str(path.resolve()), path.stat().st_mtime, str(dev))
    if key in _CACHE:
        return _CACHE[key]
    if path.suffix.lower() == ".safetensors":
        net, meta = load_style_net(path)  # kind and config bounds checked before any tensor
        config = net.config
    elif path.suffix.lower() in (".pth", ".pt", ".model"):
        net, meta = load_examples_pth(path), {"source": "pytorch/examples", "style": path.stem}
        config = net.config
    else:
        raise ValueError(f"{path}: unknown model format {path.suffix!r} (use .safetensors or .pth)")
    model = StyleModel(net=net.to(dev).eval(), config=config, name=name, meta=meta)
    _CACHE[key] = model
    return model


@contextlib.contextmanager
def gate_override(net: torch.nn.Module, gate: float | None) -> Iterator[None]:
    """Temporarily push every ρ toward IN (gate → −1) or BN (gate → +1); restored on exit.

    ρ' = ρ + g·(1 − ρ) for g ≥ 0 and ρ·(1 + g) for g < 0, so g = 0 keeps the learned gates,
    g = ±1 makes every layer pure BN / pure IN (BIN paper eq. 3 at its two ends).
    """
    if gate is None:
        yield
        return
    g = float(gate)
    if not -1.0 <= g <= 1.0:
        raise ValueError(f"gate must be in [-1, 1] (−1 = IN, +1 = BN), got {g}")
    gates = [p for _, p in norms.iter_gates(net)]
    saved = [p.detach().clone() for p in gates]
    try:
        with torch.no_grad():
            for p in gates:
                p.copy_(p + g * (1 - p) if g >= 0 else p * (1 + g)).clamp_(0, 1)
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(gates, saved):
                p.copy_(s)


BACKENDS = ("auto", "torch", "onnxruntime")
# What "auto" picks on CPU: `normlab --device cpu stylize bench --model candy_bin --sizes
# 512,1024 --repeats 2 --compile --onnx` (2-core AVX2 EPYC, shared): onnxruntime 0.28× / 0.69×
# the fp32 eager time at 512² / 1024² (PSNR vs fp32 > 110 dB), fp32 torch.compile 0.35× /
# 0.82×, bf16 autocast 6.2× / 6.6× (no native bf16 on AVX2).
AUTO_CPU_BACKEND = "onnxruntime"
# Above this many pixels "auto" stays in torch when a bar is wanted: onnxruntime runs the whole
# graph in one call, so only torch can report progress per network stage.
AUTO_ONNX_MAX_PIXELS = 2_000_000


def resolve_backend(backend: str, device: torch.device, fast: bool = False) -> str:
    """"torch" or "onnxruntime" for a requested backend; ``ValueError`` for unknown names or
    onnxruntime on a GPU / with the bf16 fast path."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "auto":
        if device.type != "cpu" or fast:
            return "torch"
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            return "torch"
        return AUTO_CPU_BACKEND
    if backend == "onnxruntime" and (device.type != "cpu" or fast):
        raise ValueError("the onnxruntime backend runs fp32 on CPU: use device cpu without fast")
    return backend


def _run(net: TransformerNet, x: torch.Tensor, fast: bool) -> torch.Tensor:
    """One forward pass (1×3×H×W, 0–255) under inference mode; ``fast``: channels_last + bf16."""
    with torch.inference_mode():
        if fast:
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=torch.bfloat16):
                return net(x).float()
        return net(x)


@contextlib.contextmanager
def _stage_progress(net: TransformerNet, bar: bool,
                    progress: Callable[[int, int], None] | None) -> Iterator[None]:
    """Progress of one untiled pass, one step per stage of the network (conv1 … deconv3): a tqdm
    bar that appears once the pass has taken 2 s, and/or ``progress(done, total)`` calls."""
    from tqdm.auto import tqdm

    stages = [m for n, m in net.named_children() if n != "relu"]
    if not bar and progress is None:
        yield
        return
    with tqdm(total=len(stages), desc="stylize", unit="stage", delay=2.0, leave=False,
              disable=not bar) as pbar:
        done = [0]

        def hook(*_: Any) -> None:
            done[0] += 1
            pbar.update(1)
            if progress is not None:
                progress(done[0], len(stages))

        handles = [m.register_forward_hook(hook) for m in stages]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def finish_output(src: Image.Image, out: Image.Image, preserve_color: bool = False,
                  strength: float = 1.0) -> Image.Image:
    """The network's RGB output brought back to ``src``: its size (bicubic), its chroma when
    ``preserve_color`` (luminance from the output, YCbCr), blended with it when ``strength`` < 1."""
    if out.size != src.size:
        out = out.resize(src.size, Image.BICUBIC)
    if preserve_color:
        yy = out.convert("YCbCr").getchannel("Y")
        _, cb, cr = src.convert("YCbCr").split()
        out = Image.merge("YCbCr", (yy, cb, cr)).convert("RGB")
    if strength < 1.0:
        out = Image.blend(src, out, strength)
    return out


def stylize_image(model: StyleModel, image: Image.Image, *, max_size: int | None = None,
                  tile: int | None = None, preserve_color: bool = False, strength: float = 1.0,
                  gate: float | None = None, device: str | torch.device = "cpu",
                  fast: bool = False, max_memory: int | str | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  bar: bool = True, backend: str = "auto",
                  style: str | int | None = None) -> Image.Image:
    """Stylize ``image``; the result has the input's size (and its alpha channel, if any).

    ``max_size`` processes a downscaled copy (longest side) and scales the result back.
    Images whose activations exceed ``max_memory`` (bytes or "2G"; default: half the available
    RAM, 80 % of free GPU memory) are processed in overlapping tiles with statistics captured on
    a thumbnail (URST, see ``stylize.tiling``), so they look like the whole-image pass; ``tile``
    forces tiles of that size. ``preserve_color`` keeps the input's chroma (YCbCr) and takes only
    luminance from the stylized image; ``strength`` blends with the input; ``gate`` overrides BIN
    gates (see ``gate_override``). ``progress(done, total)`` is called per tile (or per network
    stage when untiled); ``bar`` shows a tqdm bar for work that takes over 2 s. ``backend``:
    "torch", "onnxruntime" (CPU; the model is exported once and cached, see
    ``stylize.deploy``) or "auto" (see ``resolve_backend``); tiles always run in torch (their
    frozen statistics are a PyTorch-side mechanism). ``style`` picks a multi-style model's style
    by name or index, or blends them ("candy:0.5,mosaic:0.5"; see ``stylize.model.style_selection``).
    """
    from .tiling import parse_memory, plan_memory, stylize_tiled

    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if max_size is not None and max_size < 16:
        raise ValueError(f"max_size must be at least 16, got {max_size}")
    if gate is not None and not model.has_gates:
        raise ValueError(f"model {model.name!r} has no BIN gates (norm {model.config.norm!r}); "
                         "--gate needs a BIN model")
    resolve_backend(backend, resolve_device(device), fast)  # bad names fail before any work
    budget = None if max_memory is None else parse_memory(max_memory)
    image = _to_rgb_or_rgba(image)
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    src = image.convert("RGB")
    size = src.size
    work = src
    if max_size and max(size) > max_size:
        s = max_size / max(size)
        work = src.resize((max(1, round(size[0] * s)), max(1, round(size[1] * s))), Image.LANCZOS)
    dev = resolve_device(device)
    plan = plan_memory(work.size[0], work.size[1], model.config, device=dev, max_memory=budget,
                       tile=tile, fast=fast)
    with model.lock:
        net = model.net
        if next(net.parameters()).device != dev:
            net.to(dev)
        net.eval()
        names = style_names(model.meta, model.config.num_styles)
        with gate_override(net, gate), use_style(net, style, names):
            if plan.tile is not None:
                rgb = np.asarray(work)
                out = Image.fromarray(stylize_tiled(
                    net, rgb, lambda x: _run(net, x, fast), tile=plan.tile,
                    thumbnail_side=plan.thumbnail_side, device=dev, progress=progress, bar=bar))
                del rgb
            elif resolve_backend(backend, dev, fast) == "onnxruntime" and not (
                    backend == "auto" and bar and work.size[0] * work.size[1] > AUTO_ONNX_MAX_PIXELS
            ) and model.config.num_styles == 1:  # an exported graph holds one style
                from .deploy import onnx_runner

                out = to_image(onnx_runner(model)(to_tensor(work)))
                if progress is not None:  # one opaque call: report it as one finished stage
                    progress(1, 1)
            else:
                with _stage_progress(net, bar, progress):
                    out = to_image(_run(net, to_tensor(work).to(dev), fast).float().cpu())
    out = finish_output(src, out, preserve_color, strength)
    if alpha is not None:
        out.putalpha(alpha)
    return out


def compare_grid(models: list[StyleModel], image: Image.Image, max_size: int = 512,
                 labels: list[str] | None = None, gates: list[float | None] | None = None,
                 styles: list[str | None] | None = None, **kw: Any) -> Image.Image:
    """One labelled grid: the input, then each model's result (BIN paper, Fig. 4/5).
    ``gates`` gives a per-cell BIN gate override (None = learned ρ), ``styles`` a per-cell style
    or blend of a multi-style model (None = its first style)."""
    if not models:
        raise ValueError("compare needs at least one model")
    gates = list(gates) if gates is not None else [None] * len(models)
    if len(gates) != len(models):
        raise ValueError(f"{len(gates)} gate values for {len(models)} models")
    styles = list(styles) if styles is not None else [None] * len(models)
    if len(styles) != len(models):
        raise ValueError(f"{len(styles)} styles for {len(models)} models")
    src = _to_rgb_or_rgba(image).convert("RGB")
    if max(src.size) > max_size:
        s = max_size / max(src.size)
        src = src.resize((max(1, round(src.size[0] * s)), max(1, round(src.size[1] * s))),
                         Image.LANCZOS)
    names = labels or [(st if st else f"{m.name} ({m.config.norm}"
                        + (f", gate {g:+g})" if g is not None else ")"))
                       for m, g, st in zip(models, gates, styles)]
    cells = [("input", src)] + [(n, stylize_image(m, src, gate=g, style=st, **kw))
                                for n, m, g, st in zip(names, models, gates, styles)]
    cols = min(len(cells), 5)
    rows = (len(cells) + cols - 1) // cols
    w, h = src.size
    pad, label_h = 8, 22
    grid = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for i, (label, im) in enumerate(cells):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (w + pad), pad + r * (h + label_h + pad)
        grid.paste(im.convert("RGB"), (x0, y0))
        draw.text((x0 + 2, y0 + h + 3), label, fill="black", font=font)
    return grid
