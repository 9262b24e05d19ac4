"""Weight averaging of classifiers (SWA: Izmailov et al., "Averaging Weights Leads to Wider Optima
and Better Generalization", UAI 2018) and batch-statistics recalibration.

SWA averages the weights of several points of one training trajectory — e.g. the ends of short
cyclic-lr runs, each started from the previous one (``classify train --init``) — and then
recomputes the running statistics of every batch-statistics norm (BN, the BN branch of BN+IN,
BIN and IBN) with one pass over the training images, because the averaged weights have never
produced activations whose statistics the stored running averages describe (SWA Sec. 3.2). BIN
gates stay in [0, 1]: an average of values in [0, 1] is in [0, 1].
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from .checkpoint import Classifier, load_classifier, save_classifier
from .data import augment, crop_pad, load_data, normalize
from .registry import build_from_config


def _stat_modules(model: nn.Module) -> list[nn.Module]:
    """Modules that keep running batch statistics (torch BatchNorm and normlab's own norms)."""
    return [m for m in model.modules()
            if hasattr(m, "reset_running_stats") and hasattr(m, "momentum")
            and isinstance(getattr(m, "running_mean", None), torch.Tensor)]


def average_state(models: Sequence[nn.Module]) -> dict[str, torch.Tensor]:
    """Element-wise mean of the floating-point tensors of ``models`` (same architecture);
    integer buffers (batch counters) are taken from the first model."""
    if not models:
        raise ValueError("nothing to average: give at least one model")
    states = [m.state_dict() for m in models]
    keys = list(states[0])
    for i, s in enumerate(states[1:], 1):
        if list(s) != keys or any(s[k].shape != states[0][k].shape for k in keys):
            raise ValueError(f"model {i + 1} has other parameters than model 1: only models of "
                             "the same architecture and norm can be averaged")
    out = {}
    for k in keys:
        t = states[0][k]
        if t.is_floating_point():
            out[k] = torch.stack([s[k].double() for s in states]).mean(0).to(t.dtype)
        else:
            out[k] = t.clone()
    return out


@torch.no_grad()
def recalibrate_batch_stats(model: nn.Module, x: torch.Tensor, mean: Sequence[float],
                            std: Sequence[float], batch_size: int = 256, seed: int = 0,
                            progress: Callable[[int, int], None] | None = None) -> int:
    """Recompute the running mean/variance of every batch-statistics norm in ``model`` as the
    plain average over seeded random batches of ``x`` (uint8 N×3×H×W training images, augmented
    as in training), the model in training mode and without gradients. Returns how many layers
    were reset (0: nothing to do, e.g. an IN-only network). The model is left in eval mode."""
    mods = _stat_modules(model)
    if not mods:
        return 0
    saved = [m.momentum for m in mods]
    for m in mods:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over all batches, not an EMA
    device = next(model.parameters()).device
    was_training = model.training
    model.train()
    # Batches as training saw them (SWA's update_bn uses the training loader): shuffled — an
    # image folder is sorted by class, and one-class batches miss the between-class variance —
    # and augmented like classify.train's batches (pad + crop + flip), whose zero borders shift
    # the statistics the later layers were fitted to (clean images cost ~3 points on CIFAR-10).
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x), generator=g)
    pad = crop_pad(x.shape[-1])
    try:
        n = len(x)
        for s in range(0, n, batch_size):
            xb = augment(x[order[s:s + batch_size]], g, pad)
            model(normalize(xb.to(device), list(mean), list(std)))
            if progress:
                progress(min(n, s + batch_size), n)
    finally:
        for m, mo in zip(mods, saved):
            m.momentum = mo
        model.train(was_training)
    model.eval()
    return len(mods)


def average_classifiers(specs: Sequence[str], data: str, out: str | Path, half: bool = False,
                        batch_size: int = 256, device: str = "cpu",
                        progress: Callable[[int, int], None] | None = None) -> Path:
    """Average the weights of classifiers ``specs`` (shipped names or ``.safetensors``; same
    architecture, norm, classes and input normalisation), recalibrate their batch statistics on
    the training images of ``data`` (a ``--data`` spec) and save the result to ``out``."""
    if len(specs) < 2:
        raise ValueError("give at least two classifiers to average")
    clfs: list[Classifier] = [load_classifier(s, device) for s in specs]
    first = clfs[0]
    for s, c in zip(specs[1:], clfs[1:]):
        if c.config.to_dict() != first.config.to_dict():
            raise ValueError(f"{s} is a {c.config.arch} ({c.config.norm}), {specs[0]} a "
                             f"{first.config.arch} ({first.config.norm}): only the same model "
                             "can be averaged")
        if (c.class_names, c.mean, c.std, c.image_size) != \
                (first.class_names, first.mean, first.std, first.image_size):
            raise ValueError(f"{s} was trained on other classes or input normalisation than "
                             f"{specs[0]}")
    split = load_data(data, first.image_size)
    if split.train is None or split.train.classes != first.class_names:
        raise ValueError(f"{data}: the training images must have the classifiers' classes "
                         f"({', '.join(first.class_names)})")
    model = build_from_config(first.config).to(device)
    model.load_state_dict(average_state([c.model for c in clfs]))
    layers = recalibrate_batch_stats(model, split.train.x, first.mean, first.std, batch_size,
                                     progress=progress)
    recipe = first.meta.get("recipe")
    return save_classifier(out, model.cpu(), class_names=first.class_names, mean=first.mean,
                           std=first.std, image_size=first.image_size, half=half, recipe=recipe,
                           averaged_from=[str(s) for s in specs], recalibrated_layers=layers,
                           recalibration_images=len(split.train))
