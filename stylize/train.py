"""Perceptual-loss training of a ``TransformerNet`` (Johnson et al. 2016) with any norm, on the
shared ``engine.Trainer`` (resume, checkpoints, metrics, AMP, DDP are the engine's).

Seeded and exactly resumable: the batch of step ``s`` is a pure function of (seed, s) (one
seeded permutation per epoch), and so is its style (one seeded permutation of the styles per
round of S steps), so on CPU a resumed run ends with the same weights as an uninterrupted one.

Several style images train one network with conditional norms (Dumoulin et al., ICLR 2017: one
γ, β — and BIN's ρ — per style, every batch one style). ``from_model`` adds new styles to an
existing model and trains only their norm rows (Dumoulin et al. Sec. 4: a new style in a
fraction of the training), or everything with ``train_all``.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from PIL import Image
from torch import Tensor, nn

import norms
import engine.io
from engine.checkpoint import read_model, read_state, state_mismatch
from engine.checkpoint import save_model as _save_model
from engine.fit import fit
from engine.hooks import HookBase, ProgressEvent
from engine.images import load_image, save_image, to_image
from engine.trainer import CHECKPOINT, Task, TrainResult

from .config import RUN_SETTINGS, TrainConfig
from .losses import PerceptualLoss, load_vgg_encoder
from .photos import training_photos
from .model import (StyleConfig, TransformerNet, load_style_net, resolve_model_file,
                    style_names)

FINAL = "model.safetensors"
# What a recipe written before a key existed meant (resuming an old run keeps its behaviour).
LEGACY_RECIPE = {"output": "linear", "style_scales": [1], "from_model": None, "train_all": False,
                 "content_split": "all", "loss": "absolute", "style_weights": None,
                 "content_layer": None}
# The relative loss's default weights (dimensionless: the same for every painting and encoder);
# the optimiser (stylize.optimize) uses the same terms.
RELATIVE_WEIGHTS = {"content_weight": 1.0, "style_weight": 5.0}


class ContentImages:
    """Content photos under a folder (recursively), resized on the shorter side and centre-cropped
    to ``size``; decoded once and cached as uint8. Unreadable files are skipped and counted."""

    def __init__(self, root: str | Path, size: int, split: str = "all") -> None:
        self.files, self.photos = training_photos(root, split)  # photos: what to record
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


class StyleSchedule:
    """The style of step ``s``: every round of S steps visits each style once, in an order that
    is a pure function of (seed, round) — balanced, shuffled and exactly resumable."""

    def __init__(self, num_styles: int, seed: int, first: int = 0) -> None:
        self.n, self.seed, self.first = num_styles, seed, first
        self._round: tuple[int, list[int]] | None = None

    def __call__(self, step: int) -> int:
        if self.n == 1:
            return self.first
        r, k = divmod(step, self.n)
        if self._round is None or self._round[0] != r:
            # a stream apart from BatchSchedule's (seed·1_000_003 + epoch)
            g = torch.Generator().manual_seed((self.seed * 2_000_029 + r) ^ 0x5EED5EED)
            self._round = (r, torch.randperm(self.n, generator=g).tolist())
        return self.first + self._round[1][k]


def build_network(cfg: TrainConfig) -> tuple[TransformerNet, list[str], list[int]]:
    """(network, names of all its styles, the norm row each style image of this run trains).

    Without ``from_model``: a new network; several styles make its norms conditional ("bin" →
    "cbin"). With it: that model (shipped name or file) with one new norm row per style image,
    initialised to the mean of its rows (a single-style model is made conditional first, its
    style kept as style 0). With ``train_all``, a style image named like one of the model's
    styles keeps training that style's row (fine-tune a model on its own styles plus new ones);
    norm-only fine-tuning refuses the clash, since it promises the other styles stay as they are."""
    new = cfg.style_names
    if not cfg.from_model:
        norm = cfg.norm
        if len(new) > 1:
            norm = norms.conditional_name(norm)
        config = StyleConfig(norm, cfg.base_channels, cfg.num_residual, len(new), cfg.output)
        return TransformerNet(config=config), new, list(range(len(new)))
    path = resolve_model_file(cfg.from_model)
    net, meta = load_style_net(path)
    if cfg.train_all:
        _finite_running_stats(net)
    config = net.config
    old = style_names(meta, config.num_styles)
    row_of = {n.lower(): i for i, n in enumerate(old)}
    clash = [n for n in new if n.lower() in row_of]
    if clash and not cfg.train_all:
        raise ValueError(f"{path} already has a style named {clash[0].lower()!r}; rename the new "
                         "style image (styles are named after their files), or pass --train-all "
                         "to keep training that style along with the whole network")
    added = [n for n in new if n.lower() not in row_of]
    if not config.conditional:
        norms.make_conditional(net, 1)
        config = dataclasses.replace(config, norm=norms.conditional_name(config.norm))
    total = norms.add_styles(net, len(added)) if added else config.num_styles
    net.config = dataclasses.replace(config, num_styles=total)
    for i, n in enumerate(added):
        row_of[n.lower()] = total - len(added) + i
    rows = [row_of[n.lower()] for n in new]
    norms.set_style(net, rows[0])
    return net, old + added, rows


def _finite_running_stats(net: nn.Module) -> None:
    """Make running statistics finite before they are trained on. An fp16 model file can hold
    a first-layer BN variance above fp16's range as inf; a running average that starts at inf
    becomes NaN (inf − inf) and the network's eval output black. The largest fp16 value is what
    the file can say; the running average re-estimates it within a few dozen steps."""
    top = torch.finfo(torch.float16).max
    for b in net.buffers():
        if b.is_floating_point() and not bool(torch.isfinite(b).all()):
            b.nan_to_num_(nan=1.0, posinf=top, neginf=-top)


def style_tensor(path: str | Path, size: int | None) -> Tensor:
    """1×3×H×W (0–255) style image, shorter side resized to ``size`` when given."""
    img = load_image(path).convert("RGB")
    if size:
        w, h = img.size
        s = size / min(w, h)
        img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.BICUBIC)
    arr = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return arr.view(img.size[1], img.size[0], 3).permute(2, 0, 1).unsqueeze(0).float()


def _model_metadata(cfg: TrainConfig, names: list[str], step: int, last: dict[str, float],
                    finished: bool) -> dict[str, Any]:
    return {"style": names[0] if len(names) == 1 else cfg.style_names[0], "styles": names,
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
    """Perceptual loss (content + style + TV) on batches of content photos; each batch one style.

    Norm-only fine-tuning (``from_model`` without ``train_all``) trains the norm parameters
    alone, with the batch-statistics branches in eval mode (running statistics frozen), so the
    model's other styles keep exactly their outputs and training sees what inference sees."""

    def __init__(self, cfg: TrainConfig, data: ContentImages, loss_fn: PerceptualLoss,
                 device: torch.device, out: Path) -> None:
        self.cfg, self.data, self.loss_fn, self.device, self.out = cfg, data, loss_fn, device, out
        self.batch_size = cfg.batch_size
        self.checkpoint_every = cfg.checkpoint_every
        self.total_steps = (math.ceil(cfg.epochs * len(data) / cfg.batch_size) if cfg.epochs
                            else cfg.steps)
        self.schedule = BatchSchedule(len(data), cfg.batch_size, cfg.seed)
        torch.manual_seed(cfg.seed)
        net, self.names, self.rows = build_network(cfg)
        self.conditional = net.config.conditional
        self.name = f"stylize {net.config.norm}"
        self.styles = StyleSchedule(len(cfg.style_images), cfg.seed)  # position in style_images
        self.norm_only = bool(cfg.from_model) and not cfg.train_all
        if self.norm_only:
            keep = {id(p) for p in norms.norm_parameters(net)}
            for p in net.parameters():
                p.requires_grad_(id(p) in keep)
        self.model = net.to(device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(norms.param_groups(self.model, cfg.lr, 0.0))
        self.last: dict[str, float] = {}
        self._preview_src: Tensor | None = None

    def batch(self, step: int) -> tuple[Tensor, ...]:
        """(N×3×S×S content, N style indices — all the same: one style per batch)."""
        x = torch.stack([self.data.get(i) for i in self.schedule.indices(step)]).float()
        if self.cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x, torch.full((x.shape[0],), self.styles(step), dtype=torch.long)  # N positions

    def loss(self, model, batch):
        x, idx = batch
        k = int(idx[0])  # position in the run's style images; its norm row is self.rows[k]
        if self.norm_only:
            model.eval()  # frozen running statistics: the other styles stay as they were
        if self.conditional:
            norms.set_style(model, self.rows[k])
        losses = self.loss_fn(model(x), x, style=k)
        metrics = {k_: v.detach() for k_, v in losses.items()}
        metrics["style"] = torch.tensor(float(self.rows[k]))
        return losses["loss"], metrics

    def preview(self, step: int) -> Image.Image:
        """The first content photo through the current network, saved as ``preview_STEP.jpg``;
        with several trained styles, one panel per style side by side (at most 8)."""
        if self._preview_src is None:
            self._preview_src = self.data.get(0).unsqueeze(0).float().to(self.device)
        net = self.model
        net.eval()
        panels = []
        with torch.inference_mode():
            for k in self.rows[:8]:
                if self.conditional:
                    norms.set_style(net, k)
                panels.append(net(self._preview_src))
        net.train()
        img = to_image(torch.cat(panels, -1))
        save_image(img, self.out / f"preview_{step:06d}.jpg")
        return img

    def postfix(self, window):
        return {"content": f"{window.get('content_loss', float('nan')):.3g}",
                "style": f"{window.get('style_loss', float('nan')):.3g}"}

    def extra_state(self):
        return {"last": self.last}

    def load_extra_state(self, state):
        self.last = dict(state.get("last") or {})


    def hooks(self) -> list[HookBase]:
        return super().hooks() + [_StyleRun()]

    def save(self, path: Path, result: TrainResult) -> None:
        last = dict(self.last)
        if self.data.bad:
            last["skipped_files"] = float(len(self.data.bad))
        save_model(path, self.model.eval(),
                   {**_model_metadata(self.cfg, self.names, result.step, last,
                                      result.step >= self.total_steps),
                    "content_photos": self.data.photos})


class _StyleRun(HookBase):
    """Rank 0: ``config.json`` at the start; per step the losses kept for the model file and,
    every ``preview_every`` steps and at the end, a preview for the progress event."""

    def before_train(self) -> None:
        t = self.trainer
        if t.is_main:
            shown = {**t.task.cfg.to_dict(), "content_photos": t.task.data.photos}
            if t.task.cfg.from_model:  # the network's norm comes from the base model, not --norm
                shown["norm"] = t.task.model.config.norm
            engine.io.write_text_atomic(t.out / "config.json", json.dumps(shown, indent=2))

    def after_step(self) -> None:
        t = self.trainer
        if not t.is_main:
            return
        t.task.last = dict(t.window)
        every = t.task.cfg.preview_every
        if every and (t.step % every == 0 or t.step == t.total):
            t.preview = t.task.preview(t.step)


def training_loss(cfg: TrainConfig, encoder) -> tuple[TrainConfig, PerceptualLoss]:
    """The loss ``cfg`` trains with, on the loss network ``encoder``, and ``cfg`` with its
    weights resolved: unset content/style weights take ``--loss``'s defaults (relative: 1 and
    5; absolute: the loss network's). The one place a run's loss is built, so anything that
    measures "the training loss" (the reproductions' held-out losses) measures this one."""
    spec = getattr(encoder, "spec", None)
    relative = cfg.loss == "relative"
    defaults = (RELATIVE_WEIGHTS if relative else
                {"content_weight": spec.content_weight if spec else 1.0,
                 "style_weight": spec.style_weight if spec else 1.0})
    cw = cfg.content_weight if cfg.content_weight is not None else defaults["content_weight"]
    sw = cfg.style_weight if cfg.style_weight is not None else defaults["style_weight"]
    cfg = dataclasses.replace(cfg, content_weight=cw, style_weight=sw)
    style_layers = spec.style_layers if spec else list(encoder.taps)
    content_layer = spec.content_layer if spec else encoder.taps[-1]
    if relative and "relu3_1" in getattr(encoder, "taps", []):
        content_layer = "relu3_1"  # what the optimiser and `stylize score` measure content at
    if cfg.content_layer:
        taps = list(getattr(encoder, "taps", []))
        if cfg.content_layer not in taps:
            raise ValueError(f"--content-layer {cfg.content_layer!r} is not a layer of the loss "
                             f"network (its layers: {', '.join(taps)})")
        content_layer = cfg.content_layer
    loss_fn = PerceptualLoss(encoder, [style_tensor(p, cfg.style_size) for p in cfg.style_images],
                             style_layers, content_layer, cw, sw, cfg.tv_weight,
                             style_scales=cfg.style_scales, relative=relative,
                             style_multipliers=cfg.style_weights)
    return cfg, loss_fn


def train(cfg: TrainConfig, progress: Callable[[ProgressEvent], None] | None = None,
          should_stop: Callable[[], bool] | None = None, *, resume: bool = False,
          encoder: nn.Module | None = None, show_bar: bool = True,
          explicit: Iterable[str] | None = None, override: Iterable[str] = ()) -> Path:
    """Train a style network; returns the final ``.safetensors`` path (``<out>/model.safetensors``).

    ``resume`` (or ``cfg.resume``) continues ``<out>/checkpoint.pt`` exactly: its recipe wins,
    run settings (steps, device, cadences) may change, and any other ``explicit`` option that
    differs is an error unless named in ``override`` (``engine.trainer.resume_recipe``). Without
    it, a folder holding a run needs ``cfg.overwrite``. ``progress`` gets an
    ``engine.hooks.ProgressEvent`` per step (content_loss, style_loss in ``metrics``; a preview
    image every ``preview_every`` steps). ``encoder`` is a test hook: a loss network to use
    instead of loading VGG weights (the product always loads real ones)."""
    if explicit is None:  # library call: every value given counts; None means "the default"
        explicit = [k for k, v in cfg.to_dict().items() if v is not None]

    def build(cfg: TrainConfig, device: torch.device) -> StylizeTask:
        data = ContentImages(cfg.content_dir, cfg.image_size, cfg.content_split)
        enc = encoder if encoder is not None else load_vgg_encoder(cfg.vgg_weights)
        cfg, loss_fn = training_loss(cfg, enc)
        return StylizeTask(cfg, data, loss_fn.to(device), device, Path(cfg.out))

    return fit(cfg, build, run_settings=RUN_SETTINGS, resume=resume, explicit=explicit,
               override=override, legacy=LEGACY_RECIPE, progress=progress,
               should_stop=should_stop, show_bar=show_bar)


def model_from_checkpoint(path: str | Path) -> tuple[TransformerNet, dict[str, Any]]:
    """The weights of a run's newest training checkpoint (``<run>/checkpoint.pt``, or the run
    folder) as a style network in eval mode and its model metadata (``steps`` so far,
    ``finished`` false until the last step): a long run can be looked at and scored before it
    ends, or after Ctrl-C, without touching it. A fine-tune needs its base model to rebuild."""
    p = Path(path)
    if p.is_dir():
        p = p / CHECKPOINT
    if not p.is_file():
        raise ValueError(f"{p} does not exist (a run folder holds {CHECKPOINT} once its first "
                         "checkpoint is written)")
    state = read_state(p)
    cfg = TrainConfig.from_dict({**LEGACY_RECIPE, **state["recipe"]})
    net, names, _ = build_network(cfg)
    why = state_mismatch(net.state_dict(), state["model"])
    if why:
        raise ValueError(f"{p} is not a style-training checkpoint: {why}")
    net.load_state_dict(state["model"])
    step = int(state["step"])
    last = dict((state.get("task") or {}).get("last") or {})
    finished = not cfg.epochs and step >= cfg.steps  # an --epochs run's total needs its photos
    return net.eval(), _model_metadata(cfg, names, step, last, finished)


def export_model(src: str | Path, dst: str | Path, half: bool = True,
                 extra: dict[str, Any] | None = None) -> Path:
    """Copy a trained style model to ``dst`` (fp16 floats when ``half``), metadata kept and
    extended, schema brought up to date. ``src`` may also be a run folder or its
    ``checkpoint.pt``: the newest checkpoint's weights (``model_from_checkpoint``)."""
    p = Path(src)
    if p.is_dir() or p.suffix == ".pt":
        net, meta = model_from_checkpoint(p)
        return save_model(dst, net, {**meta, **(extra or {})}, half=half)
    tensors, meta = read_model(src, "style", validate=StyleConfig.from_dict)
    meta.update(extra or {})
    for k in ("kind", "format", "dtype"):
        meta.pop(k, None)
    config, recipe = meta.pop("config"), meta.pop("recipe", None)
    return _save_model(dst, tensors, kind="style", config=config, recipe=recipe, half=half, **meta)
