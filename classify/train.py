"""Training a classifier (``normlab classify train``) with the BIN paper's CIFAR recipe by default:
SGD, momentum 0.9, lr 0.1, weight decay 1e-4, batch 128, lr ÷10 at 50% and 75% of the epochs
(Nam & Kim 2018, Sec. 4.1, following He et al. 2016). BIN gates get 10× lr, no weight decay and
are clipped to [0, 1] after every step (``norms.param_groups`` + ``norms.attach_gate_clipping``).

Output folder: ``last.pt`` (resumable state, written atomically at each epoch end),
``metrics.jsonl`` (one JSON object per epoch) and ``model.safetensors`` (the final model with its
config, class names and normalisation statistics). Data order and augmentation come from a
generator seeded with (seed, epoch), so ``resume=True`` continues exactly as an uninterrupted
run would (bit-identical on CPU).
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

import norms
from engine.io import load_torch, save_torch
from engine.devices import resolve_device

from .checkpoint import save_classifier
from .data import DataSplit, TensorDataset, augment, channel_stats, load_data, normalize
from .registry import create_model, default_input_size


@dataclass
class TrainConfig:
    """Everything a training run needs; saved with the run so ``resume`` can check it."""

    arch: str = "resnet20"
    norm: str = "bn"
    data: str = "cifar10:data/cifar10"
    out: str = "runs/classify/resnet20-bn"
    epochs: int = 160
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 1e-4
    milestones: tuple[float, ...] = (0.5, 0.75)
    seed: int = 0
    device: str = "auto"
    amp: bool = False
    image_size: int | None = None
    train_subset: int | None = None
    test_subset: int | None = None
    train_domains: str | None = None
    test_domains: str | None = None
    download: bool = False
    resume: bool = False
    threads: int = 0
    eval_every: int = 1  # epochs between test evaluations (0: only after the last)
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Step schedule: lr ÷10 at every milestone fraction of the epochs."""
    drops = sum(epoch >= max(1, math.floor(m * cfg.epochs)) for m in cfg.milestones)
    return cfg.lr * (0.1 ** drops)


@torch.no_grad()
def evaluate(model: nn.Module, ds: TensorDataset, mean: list[float], std: list[float],
             device: torch.device, batch_size: int = 500) -> tuple[float, float]:
    """(top-1, top-5) accuracy in % of ``model`` (eval mode) on a ``TensorDataset``."""
    was = model.training
    model.eval()
    top1 = top5 = 0
    k = min(5, len(ds.classes))
    for i in range(0, len(ds), batch_size):
        x = normalize(ds.x[i:i + batch_size].to(device), mean, std)
        y = ds.y[i:i + batch_size].to(device)
        pred = model(x).topk(k, dim=1).indices
        top1 += (pred[:, 0] == y).sum().item()
        top5 += (pred == y[:, None]).any(1).sum().item()
    model.train(was)
    return 100.0 * top1 / max(len(ds), 1), 100.0 * top5 / max(len(ds), 1)


def _rng_state() -> torch.Tensor:
    return torch.get_rng_state()


def train(cfg: TrainConfig, progress: Callable[[dict], None] | None = None,
          should_stop: Callable[[], bool] | None = None, data: DataSplit | None = None) -> Path:
    """Train ``cfg.arch`` with ``cfg.norm`` on ``cfg.data``; returns the final ``.safetensors``.

    progress(dict) gets epoch, epochs, step, total, loss, acc (and test_acc at epoch ends);
    should_stop() is polled every step: the run then stops after saving nothing new (the last
    epoch checkpoint stays). A non-finite loss stops the run with a ``ValueError`` and keeps
    the last good checkpoint."""
    from tqdm import tqdm

    if cfg.epochs < 1 or cfg.batch_size < 2 or cfg.lr <= 0:
        raise ValueError("epochs must be ≥ 1, batch size ≥ 2 and lr > 0")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device)
    image_size = cfg.image_size or default_input_size(cfg.arch)
    if data is None:
        data = load_data(cfg.data, image_size, cfg.train_domains, cfg.test_domains, cfg.download)
    if data.train is None or len(data.train) < 2:
        raise ValueError(f"{cfg.data}: no training images")
    train_ds = data.train.subset(cfg.train_subset, cfg.seed)
    tests = {k: v.subset(cfg.test_subset, cfg.seed + 1) for k, v in data.tests.items()}
    if train_ds.x.shape[-1] != image_size:
        raise ValueError(f"training images are {train_ds.x.shape[-1]} px, model expects {image_size}")
    mean, std = channel_stats(train_ds.x)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    state_path, metrics_path = out / "last.pt", out / "metrics.jsonl"

    torch.manual_seed(cfg.seed)
    model = create_model(cfg.arch, num_classes=len(train_ds.classes), norm=cfg.norm,
                         **cfg.model_kwargs).to(device)
    channels_last = device.type == "cuda"
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(norms.param_groups(model, cfg.lr, cfg.weight_decay), lr=cfg.lr,
                          momentum=cfg.momentum)
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]
    norms.attach_gate_clipping(opt, model)
    use_amp = cfg.amp and device.type in ("cuda", "cpu")
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and device.type == "cuda")

    start_epoch = 0
    if cfg.resume:
        if not state_path.is_file():
            raise ValueError(f"--resume: no checkpoint {state_path}")
        st = load_torch(state_path)
        saved = st["config"]
        for k in ("arch", "norm", "data", "batch_size", "seed", "train_subset", "epochs"):
            if saved.get(k) != asdict(cfg)[k]:
                raise ValueError(f"--resume: {k} differs from the checkpoint's "
                                 f"({saved.get(k)!r} vs {asdict(cfg)[k]!r})")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["optimizer"])
        torch.set_rng_state(st["rng"])
        start_epoch = int(st["epoch"])
        if start_epoch >= cfg.epochs:
            raise ValueError(f"--resume: {state_path} already finished {start_epoch} epochs")
    elif metrics_path.exists():
        metrics_path.unlink()

    n = len(train_ds)
    steps = n // cfg.batch_size if n >= cfg.batch_size else 1  # drop the ragged last batch
    pad = max(1, image_size // 8)
    last_test = None
    for epoch in range(start_epoch, cfg.epochs):
        lr = lr_at(cfg, epoch)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr / cfg.lr
        g_ep = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        perm = torch.randperm(n, generator=g_ep)
        model.train()
        seen = correct = 0
        loss_sum = 0.0
        t0 = time.perf_counter()
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{cfg.epochs}", leave=False,
                   mininterval=1.0)
        for step in bar:
            if should_stop is not None and should_stop():
                bar.close()
                return _finish(model, cfg, out, train_ds, mean, std, image_size, last_test,
                               stopped=True)
            idx = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            xb = augment(train_ds.x[idx], g_ep, pad).to(device)
            yb = train_ds.y[idx].to(device)
            xb = normalize(xb, mean, std)
            if channels_last:
                xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=use_amp):
                logits = model(xb)
                loss = F.cross_entropy(logits.float(), yb)
            if not torch.isfinite(loss):
                bar.close()
                kept = (f"last good checkpoint kept at {state_path}" if state_path.is_file()
                        else "no checkpoint written yet")
                raise ValueError(f"loss became {loss.item()} at epoch {epoch + 1} step {step + 1}; "
                                 f"stopped, {kept} (try a lower --lr)")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            seen += len(yb)
            correct += (logits.argmax(1) == yb).sum().item()
            loss_sum += loss.item() * len(yb)
            ips = seen / max(time.perf_counter() - t0, 1e-9)
            bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}",
                            img_s=f"{ips:.0f}")
            if progress:
                progress({"epoch": epoch + 1, "epochs": cfg.epochs, "step": step + 1,
                          "total": steps, "loss": loss_sum / seen, "acc": 100 * correct / seen})
        bar.close()
        secs = time.perf_counter() - t0
        do_eval = epoch + 1 == cfg.epochs or (cfg.eval_every and (epoch + 1) % cfg.eval_every == 0)
        test_acc = ({k: evaluate(model, v, mean, std, device) for k, v in tests.items()}
                    if do_eval else {})
        last_test = {k: v[0] for k, v in test_acc.items()} if do_eval else last_test
        rec = {"epoch": epoch + 1, "lr": lr, "loss": loss_sum / max(seen, 1),
               "train_acc": 100 * correct / max(seen, 1), "seconds": round(secs, 2),
               "images_per_s": round(seen / max(secs, 1e-9), 1),
               **{f"test_acc/{k}": round(v[0], 3) for k, v in test_acc.items()},
               **{f"test_top5/{k}": round(v[1], 3) for k, v in test_acc.items()}}
        save_torch(state_path, {"config": _plain(asdict(cfg)), "epoch": epoch + 1,
                                "model": model.state_dict(), "optimizer": opt.state_dict(),
                                "rng": _rng_state()})
        with open(metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        tqdm.write(f"epoch {epoch + 1}/{cfg.epochs} loss {rec['loss']:.4f} train {rec['train_acc']:.2f}% "
                   + " ".join(f"{k} {v[0]:.2f}%" for k, v in test_acc.items())
                   + f" ({rec['images_per_s']:.0f} img/s)")
        if progress:
            progress({"epoch": epoch + 1, "epochs": cfg.epochs, "step": steps, "total": steps,
                      "loss": rec["loss"], "acc": rec["train_acc"],
                      "test_acc": next((v[0] for v in test_acc.values()), None)})
    return _finish(model, cfg, out, train_ds, mean, std, image_size, last_test)


def _plain(d: dict) -> dict:
    """Config dict with tuples as lists (weights-only pickles and JSON both accept that)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def _finish(model, cfg, out, train_ds, mean, std, image_size, test_acc, stopped=False) -> Path:
    path = out / "model.safetensors"
    save_classifier(path, model.float(), class_names=train_ds.classes, mean=mean, std=std,
                    image_size=image_size, train=_plain(asdict(cfg)), test_acc=test_acc,
                    stopped=stopped, train_images=len(train_ds))
    return path
