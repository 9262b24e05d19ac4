"""Train a decoder that inverts the frozen VGG encoder at one level (for ``stylize.arbitrary``).

Loss (Li et al., NeurIPS 2017, Sec. 3.1): pixel reconstruction plus feature reconstruction,
    L = ‖D(φ(x)) − x‖² / 255² + λ · Σ_l ‖φ_l(D(φ(x))) − φ_l(x)‖² / mean(φ_l(x)²),
over the encoder's taps l up to the decoder's level (relative feature error, so λ means the same
at every level). No style data and no style loss: the style comes from the statistics transfer
at run time. Photos: the train part of the content split (``stylize.photos``), random crops.

Runs on the shared ``engine.Trainer``: seeded, exactly resumable, atomic checkpoints, tqdm.
The batch of step ``s`` (photos, crop offsets, flips) is a pure function of (seed, s).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Iterable

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

import engine.io
from engine.images import load_image
from engine.fit import fit
from engine.trainer import Task

from .arbitrary import _PLANS, Decoder, DecoderConfig, save_decoder
from .config import DECODER_RUN_SETTINGS as RUN_SETTINGS
from .config import DecoderTrainConfig
from .losses import load_vgg_encoder
from .photos import content_split

FINAL = "model.safetensors"
_TAPS = {"relu1_1": ["relu1_1"], "relu2_1": ["relu1_1", "relu2_1"],
         "relu3_1": ["relu1_1", "relu2_1", "relu3_1"]}


class Photos:
    """Photos decoded once at ``load_size`` (shorter side) as uint8; unreadable files skipped."""

    def __init__(self, files: list[Path], load_size: int, min_side: int) -> None:
        self.images: list[Tensor] = []
        self.skipped = 0
        for f in files:
            try:
                img = load_image(f).convert("RGB")
            except ValueError:
                self.skipped += 1
                continue
            w, h = img.size
            s = load_size / min(w, h)
            img = img.resize((max(min_side, round(w * s)), max(min_side, round(h * s))),
                             Image.BICUBIC)
            t = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
            self.images.append(t.view(img.size[1], img.size[0], 3).permute(2, 0, 1).clone())
        if not self.images:
            raise ValueError("none of the content photos could be read")

    def __len__(self) -> int:
        return len(self.images)


def psnr(a: Tensor, b: Tensor) -> float:
    """PSNR in dB of two 0–255 images."""
    mse = F.mse_loss(a.float().clamp(0, 255), b.float()).item()
    return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


@torch.no_grad()
def fit_linear_decoder(decoder: Decoder, encoder: nn.Module, photos: Photos, size: int,
                       seed: int, max_photos: int = 128) -> None:
    """Set a one-conv decoder (reflection pad + 3×3 conv) to the least-squares solution of
    ``127.5·(1 + conv(φ(x))) ≈ x`` over crops of up to ``max_photos`` photos (normal equations
    in float64, a tiny ridge for conditioning). Deterministic for a seed."""
    conv = [m for m in decoder.body if isinstance(m, nn.Conv2d)]
    if len(conv) != 1:
        raise ValueError("least-squares init needs a decoder with one conv")
    conv = conv[0]
    k = conv.in_channels * 9 + 1
    ata = torch.zeros(k, k, dtype=torch.float64)
    atb = torch.zeros(k, 3, dtype=torch.float64)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(photos), generator=g)[:max_photos].tolist()
    dev = next(decoder.parameters()).device
    for i in order:
        img = photos.images[i]
        h, w = img.shape[-2:]
        top = int(torch.randint(h - size + 1, (1,), generator=g))
        left = int(torch.randint(w - size + 1, (1,), generator=g))
        x = img[:, top:top + size, left:left + size].unsqueeze(0).float().to(dev)
        f = encoder(x, [decoder.level])[decoder.level]
        cols = F.unfold(F.pad(f, (1, 1, 1, 1), mode="reflect"), 3)[0].T.double().cpu()  # HW×C·9
        cols = torch.cat([cols, torch.ones(cols.shape[0], 1, dtype=torch.float64)], 1)
        target = (x[0].reshape(3, -1).T.double().cpu() - 127.5) / 127.5  # HW×3
        ata += cols.T @ cols
        atb += cols.T @ target
    ridge = 1e-6 * ata.diagonal().mean() * torch.eye(k, dtype=torch.float64)
    sol = torch.linalg.solve(ata + ridge, atb)  # (C·9 + 1)×3
    conv.weight.copy_(sol[:-1].T.reshape(conv.weight.shape).to(conv.weight))
    conv.bias.copy_(sol[-1].to(conv.bias))


class DecoderTask(Task):
    """Reconstruction of random photo crops through encoder → decoder."""

    def __init__(self, cfg: DecoderTrainConfig, photos: Photos, heldout: Photos | None,
                 encoder: nn.Module, device: torch.device) -> None:
        self.cfg, self.photos, self.heldout, self.device = cfg, photos, heldout, device
        self.checkpoint_every = cfg.checkpoint_every
        self.name = f"decoder {cfg.level}"
        self.batch_size = cfg.batch_size
        self.total_steps = cfg.steps
        self.encoder = encoder.to(device)
        self.taps = _TAPS[cfg.level]
        torch.manual_seed(cfg.seed)
        self.model = Decoder(DecoderConfig(cfg.level)).to(device)
        if cfg.init == "lstsq" and len(_PLANS[cfg.level]) == 1:
            fit_linear_decoder(self.model, self.encoder, photos, cfg.image_size, cfg.seed)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.last: dict[str, float] = {}
        self.log_every = 10

    def batch(self, step: int) -> tuple[Tensor, ...]:
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step)
        s = self.cfg.image_size
        idx = torch.randint(len(self.photos), (self.batch_size,), generator=g).tolist()
        crops = []
        for i in idx:
            img = self.photos.images[i]
            h, w = img.shape[-2:]
            top = int(torch.randint(h - s + 1, (1,), generator=g))
            left = int(torch.randint(w - s + 1, (1,), generator=g))
            c = img[:, top:top + s, left:left + s]
            if bool(torch.randint(2, (1,), generator=g)):
                c = c.flip(-1)
            crops.append(c)
        return (torch.stack(crops).float(),)

    def loss(self, model, batch):
        (x,) = batch  # N×3×S×S, 0–255
        with torch.no_grad():
            fx = self.encoder(x, self.taps)
        y = model(fx[self.cfg.level])
        fy = self.encoder(y, self.taps)
        pixel = F.mse_loss(y.float() / 255.0, x / 255.0)
        feature = sum(F.mse_loss(fy[t].float(), fx[t].float()) / fx[t].float().pow(2).mean().clamp_min(1e-8)
                      for t in self.taps) / len(self.taps)
        loss = pixel + self.cfg.feature_weight * feature
        return loss, {"pixel_loss": pixel.detach(), "feature_loss": feature.detach()}

    def lr_factor(self, step: int) -> float:
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(step, self.total_steps) / self.total_steps))

    def should_evaluate(self, step: int) -> bool:
        every = self.cfg.eval_every
        return self.heldout is not None and (step == self.total_steps or bool(every and step % every == 0))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        """Mean PSNR (dB) of whole held-out photos reconstructed through encoder → decoder."""
        model.eval()
        vals = []
        for img in self.heldout.images:
            h, w = (d // 4 * 4 for d in img.shape[-2:])  # whole 2×2 max-pool windows
            x = img[:, :h, :w].unsqueeze(0).float().to(self.device)
            y = model(self.encoder(x, [self.cfg.level])[self.cfg.level])
            vals.append(psnr(y, x))
        model.train()
        return {"heldout_psnr": sum(vals) / len(vals)}

    def progress_info(self, step, window, evaluation, images_per_s):
        self.last = {**dict(window), **dict(evaluation)} if evaluation else {**self.last, **dict(window)}
        return {"step": step, "total": self.total_steps, **window, **evaluation,
                "images_per_s": images_per_s}

    def postfix(self, window):
        return {"pixel": f"{window.get('pixel_loss', float('nan')):.3g}",
                "feature": f"{window.get('feature_loss', float('nan')):.3g}"}

    def extra_state(self):
        return {"last": self.last}

    def load_extra_state(self, state):
        self.last = dict(state.get("last") or {})

    def save(self, path: Path, result) -> None:
        meta = {"steps": result.step, "finished": result.step >= self.total_steps,
                "train_photos": len(self.photos),
                "heldout_photos": len(self.heldout) if self.heldout else 0,
                "final_losses": {k: float(v) for k, v in self.last.items()}}
        save_decoder(path, self.model.eval(), meta, recipe=self.cfg.to_dict())


def train_decoder(cfg: DecoderTrainConfig, progress: Callable | None = None,
                  should_stop: Callable[[], bool] | None = None, *, encoder: nn.Module | None = None,
                  show_bar: bool = True, explicit: Iterable[str] | None = None,
                  override: Iterable[str] = ()) -> Path:
    """Train (or ``cfg.resume`` exactly) a decoder on the engine (``engine.fit``); returns
    ``<out>/model.safetensors``, whose metadata holds the recipe and the held-out reconstruction
    PSNR. ``progress`` receives ``engine.hooks.ProgressEvent``s; ``encoder`` is a test hook."""

    def build(cfg: DecoderTrainConfig, device: torch.device) -> DecoderTask:
        split = content_split(cfg.content_dir)
        photos = Photos(split["train"], cfg.load_size, cfg.image_size)
        heldout = Photos(split["heldout"], 256, 16) if split["heldout"] else None
        enc = encoder if encoder is not None else load_vgg_encoder(cfg.vgg_weights)
        task = DecoderTask(cfg, photos, heldout, enc, device)
        task.cfg = cfg
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        engine.io.write_text_atomic(Path(cfg.out) / "config.json", json.dumps(cfg.to_dict(), indent=2))
        return task

    return fit(cfg, build, run_settings=RUN_SETTINGS, explicit=explicit, override=override,
               progress=progress, should_stop=should_stop, show_bar=show_bar)
