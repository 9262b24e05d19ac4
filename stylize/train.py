"""Perceptual-loss training of a ``TransformerNet`` (Johnson et al. 2016) with any norm.

Seeded and exactly resumable: the batch of step ``s`` is a pure function of (seed, s) (one
seeded permutation per epoch), and the checkpoint holds model, optimizer and step, so on CPU a
resumed run ends with the same weights as an uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from PIL import Image
from torch import Tensor, nn

import norms
import engine.io
from engine.devices import resolve_device

from engine.images import list_images, load_image, to_image
from .losses import PerceptualLoss, load_vgg_encoder
from .model import StyleConfig, TransformerNet

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
FINAL = "model.safetensors"


@dataclass
class TrainConfig:
    """Everything a training run depends on; saved in its checkpoints and final model."""

    style_image: str = ""
    content_dir: str = ""
    norm: str = "in"
    out: str = "runs/stylize"
    image_size: int = 256
    batch_size: int = 4
    steps: int = 2000
    epochs: float | None = None  # overrides steps when given
    lr: float = 1e-3
    content_weight: float | None = None  # None: the loss network's default (see losses.py)
    style_weight: float | None = None
    tv_weight: float = 0.0
    style_size: int | None = None  # shorter side of the style image; None = as is
    seed: int = 42
    device: str = "auto"
    amp: bool = False  # bf16 autocast, CUDA only
    checkpoint_every: int = 200
    preview_every: int = 0  # 0 = no previews
    vgg_weights: str | None = None
    base_channels: int = 32
    num_residual: int = 5

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class ContentImages:
    """Content photos under a folder (recursively), resized on the shorter side and centre-cropped
    to ``size``; decoded once and cached as uint8. Unreadable files are skipped and counted."""

    def __init__(self, root: str | Path, size: int) -> None:
        self.files = list_images(root)
        if not self.files:
            raise ValueError(f"no images found under {root}")
        self.size = size
        self.cache: dict[int, Tensor] = {}
        self.bad: set[int] = set()

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, i: int) -> Tensor | None:
        try:
            img = load_image(self.files[i]).convert("RGB")
        except ValueError:
            return None
        w, h = img.size
        s = self.size / min(w, h)
        img = img.resize((max(self.size, round(w * s)), max(self.size, round(h * s))),
                         Image.BILINEAR)
        w, h = img.size
        left, top = (w - self.size) // 2, (h - self.size) // 2
        img = img.crop((left, top, left + self.size, top + self.size))
        return torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(
            self.size, self.size, 3).permute(2, 0, 1).clone()

    def get(self, i: int) -> Tensor:
        """3×S×S uint8 of file ``i``, or of the next readable file (deterministic)."""
        for k in range(len(self.files)):
            j = (i + k) % len(self.files)
            if j in self.bad:
                continue
            if j not in self.cache:
                t = self._decode(j)
                if t is None:
                    self.bad.add(j)
                    continue
                self.cache[j] = t
            return self.cache[j]
        raise ValueError("none of the content images could be read")


class BatchSchedule:
    """The content indices of step ``s``: a pure function of (seed, s) — hence exact resume."""

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.bs, self.seed = n, batch_size, seed
        self._perms: dict[int, Tensor] = {}

    def _perm(self, epoch: int) -> Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}
        return self._perms[epoch]

    def indices(self, step: int) -> list[int]:
        out = []
        for k in range(step * self.bs, (step + 1) * self.bs):
            out.append(int(self._perm(k // self.n)[k % self.n]))
        return out


def style_tensor(path: str | Path, size: int | None) -> Tensor:
    """1×3×H×W (0–255) style image, shorter side resized to ``size`` when given."""
    img = load_image(path).convert("RGB")
    if size:
        w, h = img.size
        s = size / min(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
    arr = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return arr.view(img.size[1], img.size[0], 3).permute(2, 0, 1).unsqueeze(0).float()


def _model_metadata(cfg: TrainConfig, net: TransformerNet, step: int, last: dict[str, float],
                    finished: bool) -> dict[str, Any]:
    return {
        "kind": "stylize",
        "config": net.config.to_dict(),
        "style": Path(cfg.style_image).stem,
        "recipe": cfg.to_dict(),
        "steps": step,
        "finished": finished,
        "final_losses": last,
    }


def save_model(path: str | Path, net: nn.Module, metadata: dict[str, Any],
               half: bool = False) -> Path:
    """The model as one safetensors file (config in metadata); ``half`` stores floats as fp16."""
    state = {k: (v.half() if half and v.is_floating_point() else v)
             for k, v in net.state_dict().items()}
    engine.io.save_safetensors(path, state, metadata)
    return Path(path)


def _read_metrics(path: Path, upto: int) -> list[str]:
    if not path.exists():
        return []
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= upto:
                keep.append(line)
        except json.JSONDecodeError:
            break  # a line cut by a crash: everything after it is stale
    return keep


def train(cfg: TrainConfig, progress: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None, *, resume: bool = False,
          encoder: nn.Module | None = None, show_bar: bool = True) -> Path:
    """Train a style network; returns the final ``.safetensors`` path (``<out>/model.safetensors``).

    ``resume`` continues ``<out>/checkpoint.pt`` exactly (its recipe wins; only ``steps``,
    ``checkpoint_every``, ``preview_every`` and ``device`` may change). ``encoder`` is a test hook:
    a loss network to use instead of loading VGG weights (the product always loads real ones).
    """
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT
    state = None
    if resume:
        if not ckpt_path.is_file():
            raise ValueError(f"nothing to resume: {ckpt_path} does not exist")
        state = engine.io.load_torch(ckpt_path)
        old = TrainConfig.from_dict(json.loads(state["config"]))
        cfg = dataclasses.replace(old, steps=cfg.steps, epochs=cfg.epochs,
                                  checkpoint_every=cfg.checkpoint_every,
                                  preview_every=cfg.preview_every, device=cfg.device, out=cfg.out)
    if not cfg.style_image:
        raise ValueError("no style image given (--style-image)")
    if not cfg.content_dir:
        raise ValueError("no content folder given (--content)")
    if cfg.image_size < 16 or cfg.batch_size < 1 or cfg.lr <= 0:
        raise ValueError("need image_size ≥ 16, batch_size ≥ 1 and lr > 0")
    if cfg.norm in ("bn", "bin", "bn_in", "ibn", "sn") and cfg.batch_size < 2:
        raise ValueError(f"norm {cfg.norm!r} uses batch statistics: use --batch-size 2 or more")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)

    data = ContentImages(cfg.content_dir, cfg.image_size)
    total = (math.ceil(cfg.epochs * len(data) / cfg.batch_size) if cfg.epochs else cfg.steps)
    if total < 1:
        raise ValueError("need at least one training step (--steps or --epochs)")
    schedule = BatchSchedule(len(data), cfg.batch_size, cfg.seed)

    if encoder is None:
        encoder = load_vgg_encoder(cfg.vgg_weights)
    spec = getattr(encoder, "spec", None)
    cw = cfg.content_weight if cfg.content_weight is not None else (spec.content_weight if spec else 1.0)
    sw = cfg.style_weight if cfg.style_weight is not None else (spec.style_weight if spec else 1.0)
    cfg = dataclasses.replace(cfg, content_weight=cw, style_weight=sw)
    style_layers = spec.style_layers if spec else list(encoder.taps)
    content_layer = spec.content_layer if spec else encoder.taps[-1]
    loss_fn = PerceptualLoss(encoder, style_tensor(cfg.style_image, cfg.style_size), style_layers,
                             content_layer, cw, sw, cfg.tv_weight).to(device)

    net = TransformerNet(config=StyleConfig(cfg.norm, cfg.base_channels, cfg.num_residual)).to(device)
    opt = torch.optim.Adam(norms.param_groups(net, cfg.lr, 0.0))
    norms.attach_gate_clipping(opt, net)  # BIN paper Sec. 3.2: ρ clipped to [0, 1] every step
    start = 0
    if state is not None:
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start = int(state["step"])
    out.mkdir(parents=True, exist_ok=True)
    engine.io.write_text_atomic(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
    metrics_path = out / METRICS
    engine.io.write_text_atomic(metrics_path, "".join(l + "\n" for l in _read_metrics(metrics_path, start)))

    preview_src = data.get(0).unsqueeze(0).float().to(device)
    last: dict[str, float] = dict(state.get("last", {})) if state is not None else {}

    def checkpoint(step: int) -> None:
        engine.io.save_torch(ckpt_path, {"model": net.state_dict(), "optimizer": opt.state_dict(),
                                        "step": step, "config": json.dumps(cfg.to_dict()),
                                        "last": last})

    def preview(step: int) -> Image.Image:
        net.eval()
        with torch.inference_mode():
            img = to_image(net(preview_src))
        net.train()
        from engine.images import save_image
        save_image(img, out / f"preview_{step:06d}.jpg")
        return img

    use_amp = bool(cfg.amp) and device.type == "cuda"
    bar = None
    if show_bar:
        from tqdm.auto import tqdm
        bar = tqdm(total=total, initial=start, desc=f"stylize {cfg.norm}", unit="step",
                   dynamic_ncols=True)
    net.train()
    step = start
    t0, seen = time.perf_counter(), 0
    try:
        with open(metrics_path, "a", buffering=1) as mf:
            while step < total:
                if should_stop is not None and should_stop():
                    break
                idx = schedule.indices(step)
                x = torch.stack([data.get(i) for i in idx]).float().to(device)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
                    y = net(x)
                    losses = loss_fn(y, x)
                loss = losses["loss"]
                if not torch.isfinite(loss):
                    raise ValueError(f"loss became {loss.item()} at step {step + 1}; stopped, last "
                                     f"good checkpoint kept at {ckpt_path} (try a lower --lr)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                step += 1
                seen += len(idx)
                last = {k: float(v.detach()) for k, v in losses.items()}
                rec = {"step": step, **last, "time": round(time.time(), 3)}
                mf.write(json.dumps(rec) + "\n")
                ips = seen / max(time.perf_counter() - t0, 1e-9)
                info = {"step": step, "total": total, "content_loss": last["content_loss"],
                        "style_loss": last["style_loss"], "images_per_s": ips, "preview": None}
                if cfg.preview_every and (step % cfg.preview_every == 0 or step == total):
                    info["preview"] = preview(step)
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0:
                    checkpoint(step)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(content=f"{last['content_loss']:.3g}",
                                    style=f"{last['style_loss']:.3g}", img_s=f"{ips:.2f}")
                if progress is not None:
                    progress(info)
    except KeyboardInterrupt:
        checkpoint(step)  # Ctrl-C keeps every finished step: continue with --resume
        raise
    finally:
        if bar is not None:
            bar.close()
    checkpoint(step)
    if data.bad:
        last["skipped_files"] = float(len(data.bad))
    final = save_model(out / FINAL, net.eval(), _model_metadata(cfg, net, step, last, step >= total))
    return final


def export_model(src: str | Path, dst: str | Path, half: bool = True,
                 extra: dict[str, Any] | None = None) -> Path:
    """Copy a trained model to ``dst`` (fp16 floats when ``half``), metadata kept and extended."""
    tensors, meta = engine.io.load_safetensors(src)
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"{src} is not a model written by `stylize train` (no config metadata)")
    meta.update(extra or {})
    meta["dtype"] = "float16" if half else "float32"
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in tensors.items()}
    engine.io.save_safetensors(dst, state, meta)
    return Path(dst)
