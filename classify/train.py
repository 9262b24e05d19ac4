"""Training a classifier (``normlab classify train``) on the shared ``engine.Trainer``.

Default recipe: the BIN paper's CIFAR schedule (Nam & Kim 2018, Sec. 4.1, after He et al. 2016):
SGD, momentum 0.9, lr 0.1, weight decay 1e-4, batch 128, lr ÷10 at 50% and 75% of the epochs.
``schedule="onecycle"`` is the fast alternative (linear warm-up over the first 15% of steps, then
cosine decay to zero, lr updated every step; Smith & Topin 2019), usually with
``label_smoothing=0.1``: it reaches in ~30 epochs what the step schedule reaches in ~160.
BIN gates get 10× lr, no weight decay and are clipped to [0, 1] after every step
(``norms.param_groups``; clipping is attached by the trainer).

Output folder: ``checkpoint.pt`` (resumable state, at every epoch end and on stop; the one
before kept as ``checkpoint.prev.pt``),
``metrics.jsonl`` (one line per epoch) and ``model.safetensors`` (config, recipe, class names and
normalisation statistics). The batch of step s — order and augmentation — comes from generators
seeded with (seed, epoch) and (seed, s), so a resumed run is bit-identical to an uninterrupted one
on CPU.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

import norms
from engine.checkpoint import CHECKPOINT
from engine.fit import fit
from engine.hooks import ProgressEvent
from engine.trainer import Task, TrainResult

from .checkpoint import save_classifier
from .config import RUN_SETTINGS, SCHEDULES, TrainConfig  # noqa: F401  (the config's old home)
from .data import DataSplit, TensorDataset, augment, channel_stats, crop_pad, load_data, normalize
from .registry import create_model, default_input_size


def lr_at(cfg: TrainConfig, epoch: int) -> float:
    """Step schedule: lr ÷10 at every milestone fraction of the epochs."""
    drops = sum(epoch >= max(1, math.floor(m * cfg.epochs)) for m in cfg.milestones)
    return cfg.lr * (0.1 ** drops)


def onecycle_factor(step: int, total: int, warmup: float = 0.15, start: float = 0.1) -> float:
    """One-cycle lr multiplier at ``step`` of ``total``: linear from ``start`` to 1 over the first
    ``warmup`` fraction, then cosine to 0."""
    w = max(1, round(warmup * total))
    if step < w:
        return start + (1 - start) * step / w
    t = (step - w) / max(1, total - w)
    return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def init_from(model: nn.Module, spec: str) -> None:
    """Copy the weights of classifier ``spec`` (shipped name or .safetensors) into ``model``,
    which must be the same architecture, norm and number of classes."""
    from .checkpoint import load_classifier

    src = load_classifier(spec)
    want, got = model.config, src.config
    if (want.arch, want.norm, want.num_classes) != (got.arch, got.norm, got.num_classes):
        raise ValueError(f"--init {spec}: it is {got.arch}/{got.norm} with {got.num_classes} "
                         f"classes, but this run trains {want.arch}/{want.norm} with "
                         f"{want.num_classes}")
    model.load_state_dict({k: v.float() for k, v in src.model.state_dict().items()})


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


class ClassifyTask(Task):
    """Cross-entropy on augmented batches; evaluation on every test set at epoch ends."""

    def __init__(self, cfg: TrainConfig, train_ds: TensorDataset, tests: dict[str, TensorDataset],
                 mean: list[float], std: list[float], device: torch.device,
                 image_size: int | None = None) -> None:
        self.cfg, self.train_ds, self.tests = cfg, train_ds, tests
        self.mean, self.std, self.device = mean, std, device
        self.image_size = image_size or train_ds.x.shape[-1]
        self.name = f"{cfg.arch} {cfg.norm}"
        n = len(train_ds)
        self.batch_size = cfg.batch_size
        self.steps_per_epoch = n // cfg.batch_size if n >= cfg.batch_size else 1  # ragged batch dropped
        self.total_steps = self.steps_per_epoch * cfg.epochs
        self.log_every = self.checkpoint_every = self.steps_per_epoch
        self.pad = crop_pad(train_ds.x.shape[-1])
        torch.manual_seed(cfg.seed)
        self.model = create_model(cfg.arch, num_classes=len(train_ds.classes), norm=cfg.norm,
                                  **cfg.model_kwargs).to(device)
        if cfg.init and not cfg.resume:  # on resume the checkpoint's weights win anyway
            init_from(self.model, cfg.init)
        self.optimizer = torch.optim.SGD(norms.param_groups(self.model, cfg.lr, cfg.weight_decay),
                                         lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov)
        self._perm: tuple[int, torch.Tensor] | None = None
        self.last_test: dict[str, float] | None = None
        self._mean_t = torch.tensor(mean, device=device).view(1, -1, 1, 1)
        self._std_t = torch.tensor(std, device=device).view(1, -1, 1, 1)

    def _epoch_perm(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            g = torch.Generator().manual_seed(self.cfg.seed * 100_003 + epoch)
            self._perm = (epoch, torch.randperm(len(self.train_ds), generator=g))
        return self._perm[1]

    def batch(self, step: int) -> tuple[torch.Tensor, ...]:
        epoch, i = divmod(step, self.steps_per_epoch)
        bs = self.cfg.batch_size
        idx = self._epoch_perm(epoch)[i * bs:(i + 1) * bs]
        g = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + 7919 * step + 1)
        return augment(self.train_ds.x[idx], g, self.pad), self.train_ds.y[idx]

    def loss(self, model, batch):
        xb, yb = batch
        x = (xb.float() / 255 - self._mean_t) / self._std_t
        if x.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        logits = model(x)
        loss = F.cross_entropy(logits.float(), yb, label_smoothing=self.cfg.label_smoothing)
        acc = (logits.argmax(1) == yb).float().mean() * 100
        return loss, {"loss": loss.detach(), "train_acc": acc.detach()}

    def lr_factor(self, step: int) -> float:
        if self.cfg.schedule == "onecycle":
            return onecycle_factor(step, self.total_steps)
        return lr_at(self.cfg, step // self.steps_per_epoch) / self.cfg.lr

    def should_evaluate(self, step: int) -> bool:
        every = self.cfg.eval_every
        return bool(every) and step % (self.steps_per_epoch * every) == 0

    def evaluate(self, model, step):
        res = {k: evaluate(model, v, self.mean, self.std, self.device) for k, v in self.tests.items()}
        self.last_test = {k: v[0] for k, v in res.items()}
        out = {f"test_acc/{k}": round(v[0], 3) for k, v in res.items()}
        out.update({f"test_top5/{k}": round(v[1], 3) for k, v in res.items()})
        if res:
            from tqdm.auto import tqdm

            tqdm.write(f"epoch {step // self.steps_per_epoch}/{self.cfg.epochs} "
                       + " ".join(f"{k} {v[0]:.2f}%" for k, v in res.items()))
        return out

    def record(self, step: int) -> dict[str, Any]:
        epoch = math.ceil(step / self.steps_per_epoch)
        return {"epoch": epoch, "lr": self.cfg.lr * self.lr_factor(step - 1)}

    def postfix(self, window):
        return {"loss": f"{window.get('loss', float('nan')):.3f}",
                "acc": f"{window.get('train_acc', float('nan')):.1f}"}

    def extra_state(self):
        return {"last_test": self.last_test}

    def load_extra_state(self, state):
        self.last_test = state.get("last_test")


    final: dict[str, TensorDataset] = {}  # test sets held back by --val-split

    def save(self, path: Path, result: TrainResult) -> None:
        acc: dict[str, Any] = {"test_acc": self.last_test}
        if self.final:  # validation held out: the test sets, once, now
            res = {k: evaluate(self.model, v, self.mean, self.std, self.device)
                   for k, v in self.final.items()}
            acc = {"val_acc": self.last_test, "test_acc": {k: v[0] for k, v in res.items()},
                   "test_top5": {k: v[1] for k, v in res.items()},
                   "test_evaluated": "once, after training; selection saw only val_acc"}
        save_classifier(path, self.model.float(), class_names=self.train_ds.classes,
                        mean=self.mean, std=self.std, image_size=self.image_size,
                        recipe=self.cfg.recipe(), stopped=result.stopped,
                        epochs_done=result.step / self.steps_per_epoch,
                        train_images=len(self.train_ds), **acc)


def train(cfg: TrainConfig, progress: Callable[[ProgressEvent], None] | None = None,
          should_stop: Callable[[], bool] | None = None, data: DataSplit | None = None, *,
          explicit: Iterable[str] | None = None, override: Iterable[str] = (),
          show_bar: bool = True) -> Path:
    """Train ``cfg.arch`` with ``cfg.norm`` on ``cfg.data``; returns the final ``.safetensors``.

    ``progress(event)`` gets an ``engine.hooks.ProgressEvent`` per step (epochs from
    ``steps_per_epoch``; metrics loss and train_acc; the test accuracies in ``evaluation`` at
    epoch ends); ``should_stop()`` is polled every step: the run then writes a resumable
    checkpoint and the model so far. With ``cfg.resume`` the checkpoint's recipe wins (see
    ``engine.trainer.resume_recipe``: ``explicit`` options that conflict are errors unless named
    in ``override``); without it, a folder holding a run needs ``cfg.overwrite``. A non-finite
    loss raises ``ValueError`` naming the last good checkpoint."""

    def build(cfg: TrainConfig, device: torch.device) -> ClassifyTask:
        image_size = cfg.image_size or default_input_size(cfg.arch)
        split = data if data is not None else load_data(cfg.data, image_size, cfg.train_domains,
                                                         cfg.test_domains, cfg.download)
        if split.train is None or len(split.train) < 2:
            raise ValueError(f"{cfg.data}: no training images")
        if cfg.val_split:
            split = split.with_validation(cfg.val_split)
        train_ds = split.train.subset(cfg.train_subset, cfg.seed)
        tests = {k: v.subset(cfg.test_subset, cfg.seed + 1) for k, v in split.tests.items()}
        if train_ds.x.shape[-1] != image_size:
            raise ValueError(f"training images are {train_ds.x.shape[-1]} px, model expects "
                             f"{image_size}")
        mean, std = channel_stats(train_ds.x)
        task = ClassifyTask(cfg, train_ds, tests, mean, std, device, image_size)
        task.final = {k: v.subset(cfg.test_subset, cfg.seed + 1) for k, v in split.final.items()}
        return task

    def finished(cfg: TrainConfig) -> str:
        return (f"--resume: {Path(cfg.out) / CHECKPOINT} already finished {cfg.epochs} epochs "
                "(to train longer, start a new run or --override epochs)")

    return fit(cfg, build, run_settings=RUN_SETTINGS, explicit=explicit, override=override,
               refuse_finished=finished, progress=progress, should_stop=should_stop,
               show_bar=show_bar)
