"""Perceptual-loss training of a ``TransformerNet`` (Johnson et al. 2016) with any norm, on the
shared ``engine.Trainer`` (resume, checkpoints, metrics, AMP, DDP are the engine's).

Seeded and exactly resumable: the batch of step ``s`` is a pure function of (seed, s) (one
seeded permutation per epoch), so on CPU a resumed run ends with the same weights as an
uninterrupted one.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from PIL import Image
from torch import Tensor, nn

import norms
import engine.io
from engine.checkpoint import check_range, read_model
from engine.checkpoint import save_model as _save_model
from engine.devices import resolve_device
from engine.images import list_images, load_image, save_image, to_image
from engine.trainer import CHECKPOINT, METRICS, Task, Trainer, load_state, resume_recipe

from .losses import PerceptualLoss, load_vgg_encoder
from .model import StyleConfig, TransformerNet

FINAL = "model.safetensors"
# Settings that may change on resume (how and where a run goes, not what it learns).
RUN_SETTINGS = ("out", "device", "amp", "compile", "steps", "epochs", "checkpoint_every",
                "preview_every", "resume")


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
    amp: bool = False  # mixed precision (engine.devices.amp_dtype: bf16 where supported)
    compile: bool = False
    resume: bool = False
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

    def validate(self) -> None:
        """One-line ``ValueError`` naming the option for a missing input or out-of-range value."""
        if not self.style_image:
            raise ValueError("no style image given (--style-image)")
        if not self.content_dir:
            raise ValueError("no content folder given (--content)")
        check_range("image size", self.image_size, 16, 4096)
        check_range("batch size", self.batch_size, 1, 4096)
        check_range("steps", self.steps, 1, 10**8)
        if self.epochs is not None:
            check_range("epochs", self.epochs, 1e-6, 1e6, integer=False)
        check_range("learning rate (lr)", self.lr, 1e-8, 10, integer=False)
        for name in ("content_weight", "style_weight"):
            if getattr(self, name) is not None:
                check_range(name.replace("_", " "), getattr(self, name), 0, 1e12, integer=False)
        check_range("tv weight", self.tv_weight, 0, 1e12, integer=False)
        if self.style_size is not None:
            check_range("style size", self.style_size, 16, 8192)
        check_range("checkpoint every (steps)", self.checkpoint_every, 0, 10**8)
        check_range("preview every (steps)", self.preview_every, 0, 10**8)
        check_range("seed", self.seed, 0, 2**63 - 1)
        StyleConfig(self.norm, self.base_channels, self.num_residual).validate()
        if self.norm in ("bn", "bin", "bn_in", "ibn", "sn") and self.batch_size < 2:
            raise ValueError(f"norm {self.norm!r} uses batch statistics: use a batch size of 2 or more")


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


def _model_metadata(cfg: TrainConfig, step: int, last: dict[str, float],
                    finished: bool) -> dict[str, Any]:
    return {"style": Path(cfg.style_image).stem, "styles": [Path(cfg.style_image).stem],
            "recipe": cfg.to_dict(), "steps": step, "finished": finished, "final_losses": last}


def save_model(path: str | Path, net: nn.Module, metadata: dict[str, Any],
               half: bool = False) -> Path:
    """The model as one safetensors file in the normlab schema (``engine.checkpoint``; its
    config from ``net.config``); ``half`` stores floats as fp16."""
    meta = {k: v for k, v in metadata.items() if k not in ("kind", "config", "format", "dtype")}
    recipe = meta.pop("recipe", None)
    return _save_model(path, net.state_dict(), kind="style", config=net.config.to_dict(),
                       recipe=recipe, half=half, **meta)


class StylizeTask(Task):
    """Perceptual loss (content + style + TV) on batches of content photos."""

    def __init__(self, cfg: TrainConfig, data: ContentImages, loss_fn: PerceptualLoss,
                 device: torch.device, out: Path) -> None:
        self.cfg, self.data, self.loss_fn, self.device, self.out = cfg, data, loss_fn, device, out
        self.name = f"stylize {cfg.norm}"
        self.batch_size = cfg.batch_size
        self.total_steps = (math.ceil(cfg.epochs * len(data) / cfg.batch_size) if cfg.epochs
                            else cfg.steps)
        self.schedule = BatchSchedule(len(data), cfg.batch_size, cfg.seed)
        torch.manual_seed(cfg.seed)
        self.model = TransformerNet(config=StyleConfig(cfg.norm, cfg.base_channels,
                                                       cfg.num_residual)).to(device)
        self.optimizer = torch.optim.Adam(norms.param_groups(self.model, cfg.lr, 0.0))
        self.last: dict[str, float] = {}
        self._preview_src: Tensor | None = None

    def batch(self, step: int) -> tuple[Tensor, ...]:
        return (torch.stack([self.data.get(i) for i in self.schedule.indices(step)]).float(),)

    def loss(self, model, batch):
        (x,) = batch
        losses = self.loss_fn(model(x), x)
        return losses["loss"], {k: v.detach() for k, v in losses.items()}

    def preview(self, step: int) -> Image.Image:
        """The first content photo through the current network, saved as ``preview_STEP.jpg``."""
        if self._preview_src is None:
            self._preview_src = self.data.get(0).unsqueeze(0).float().to(self.device)
        net = self.model
        net.eval()
        with torch.inference_mode():
            img = to_image(net(self._preview_src))
        net.train()
        save_image(img, self.out / f"preview_{step:06d}.jpg")
        return img

    def progress_info(self, step, window, evaluation, images_per_s):
        self.last = dict(window)
        info = {"step": step, "total": self.total_steps, "content_loss": window["content_loss"],
                "style_loss": window["style_loss"], "images_per_s": images_per_s, "preview": None}
        every = self.cfg.preview_every
        if every and (step % every == 0 or step == self.total_steps):
            info["preview"] = self.preview(step)
        return info

    def postfix(self, window):
        return {"content": f"{window.get('content_loss', float('nan')):.3g}",
                "style": f"{window.get('style_loss', float('nan')):.3g}"}

    def extra_state(self):
        return {"last": self.last}

    def load_extra_state(self, state):
        self.last = dict(state.get("last") or {})


def train(cfg: TrainConfig, progress: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None, *, resume: bool = False,
          encoder: nn.Module | None = None, show_bar: bool = True,
          explicit: Iterable[str] | None = None, override: Iterable[str] = ()) -> Path:
    """Train a style network; returns the final ``.safetensors`` path (``<out>/model.safetensors``).

    ``resume`` (or ``cfg.resume``) continues ``<out>/checkpoint.pt`` exactly: its recipe wins,
    run settings (steps, device, cadences) may change, and any other ``explicit`` option that
    differs is an error unless named in ``override`` (``engine.trainer.resume_recipe``).
    ``encoder`` is a test hook: a loss network to use instead of loading VGG weights (the product
    always loads real ones)."""
    out = Path(cfg.out)
    state = None
    if resume or cfg.resume:
        state = load_state(out)
        given = cfg.to_dict()
        if explicit is None:  # library call: compare what the caller could mean, not defaults
            explicit = [k for k, v in given.items() if v != getattr(TrainConfig(), k)]
        merged = resume_recipe(state["recipe"], given, mutable=RUN_SETTINGS, explicit=explicit,
                               override=override, source=out / CHECKPOINT)
        cfg = TrainConfig.from_dict(merged)
    cfg.validate()
    env = _dist_env(cfg.device)
    device = env.device if env is not None else resolve_device(cfg.device)

    data = ContentImages(cfg.content_dir, cfg.image_size)
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

    task = StylizeTask(cfg, data, loss_fn, device, out)
    trainer = Trainer(task, out=out, recipe=cfg.to_dict(), device=device, amp=cfg.amp,
                      compile=cfg.compile, checkpoint_every=cfg.checkpoint_every, env=env)
    start = trainer.restore(state) if state is not None else 0
    if env is None or env.is_main:
        out.mkdir(parents=True, exist_ok=True)
        engine.io.write_text_atomic(out / "config.json", json.dumps(cfg.to_dict(), indent=2))
    result = trainer.run(start=start, progress=progress, should_stop=should_stop, show_bar=show_bar)
    last = dict(task.last)
    if data.bad:
        last["skipped_files"] = float(len(data.bad))
    final = out / FINAL
    if env is None or env.is_main:
        save_model(final, task.model.eval(),
                   _model_metadata(cfg, result.step, last, result.step >= task.total_steps))
    return final


def _dist_env(device: str):
    """The torchrun environment when this process is one of several, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from engine.distributed import init_distributed

    return init_distributed(device)


def export_model(src: str | Path, dst: str | Path, half: bool = True,
                 extra: dict[str, Any] | None = None) -> Path:
    """Copy a trained style model to ``dst`` (fp16 floats when ``half``), metadata kept and
    extended, schema brought up to date."""
    tensors, meta = read_model(src, "style", validate=StyleConfig.from_dict)
    meta.update(extra or {})
    for k in ("kind", "format", "dtype"):
        meta.pop(k, None)
    config, recipe = meta.pop("config"), meta.pop("recipe", None)
    return _save_model(dst, tensors, kind="style", config=config, recipe=recipe, half=half, **meta)
