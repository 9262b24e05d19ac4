"""Evaluations of trained classifiers: accuracy (per domain), robustness to appearance shifts,
BIN gate histograms, IBN-Net feature divergence between domains, and top-k prediction."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable

import torch
from PIL import Image
from torch import nn

import norms

from .checkpoint import Classifier
from .data import TensorDataset, fit_square, load_data, normalize, pil_to_uint8
from .shift import apply_shift, parse_shift
from .train import evaluate


def predict(clf: Classifier, image: Image.Image, topk: int = 5) -> list[tuple[str, float]]:
    """Top-k (class name, probability) for one image (shorter side resized to the model's input
    size, centre crop)."""
    x = pil_to_uint8(fit_square(image.convert("RGB"), clf.image_size))[None]
    dev = next(clf.model.parameters()).device
    with torch.no_grad():
        p = torch.softmax(clf.model(normalize(x.to(dev), clf.mean, clf.std)).float(), 1)[0]
    v, i = p.topk(min(topk, p.numel()))
    return [(clf.class_names[j], float(q)) for q, j in zip(v.tolist(), i.tolist())]


def eval_sets(clf: Classifier, data: str, test_domains: str | None = None,
              limit: int | None = None, seed: int = 0) -> dict[str, TensorDataset]:
    """The test set(s) of a ``--data`` spec at the classifier's input size, class names checked."""
    split = load_data(data, clf.image_size, None, test_domains, need_train=False)
    out = {}
    for k, ds in split.tests.items():
        if ds.classes != clf.class_names:
            raise ValueError(f"{data} ({k}) has classes {ds.classes[:4]}..., the model "
                             f"{clf.name} was trained on {clf.class_names[:4]}...")
        out[k] = ds.subset(limit, seed)
    return out


def shifted(ds: TensorDataset, shift: str, strength: float | None, device: str = "cpu",
            progress: Callable[[int, int], None] | None = None) -> TensorDataset:
    """``ds`` with every image passed through ``apply_shift``."""
    x = torch.empty_like(ds.x)
    for i in range(len(ds)):
        im = Image.fromarray(ds.x[i].permute(1, 2, 0).numpy(), "RGB")
        x[i] = pil_to_uint8(apply_shift(im, shift, strength, device=device))
        if progress and i % 200 == 0:
            progress(i, len(ds))
    return TensorDataset(x, ds.y, ds.classes, f"{ds.name}+{shift}")


@dataclass
class ShiftTable:
    """Top-1 accuracy (%) per model (rows) and condition (columns; 'clean' first)."""

    models: list[str]
    conditions: list[str]
    acc: dict[str, dict[str, float]] = field(default_factory=dict)
    n_images: int = 0

    def to_markdown(self) -> str:
        head = "| model | " + " | ".join(self.conditions) + " |"
        out = [head, "|---|" + "---:|" * len(self.conditions)]
        for m in self.models:
            clean = self.acc[m]["clean"]
            cells = [f"{clean:.2f}"] + [f"{self.acc[m][c]:.2f} ({self.acc[m][c] - clean:+.2f})"
                                        for c in self.conditions[1:]]
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        return "\n".join(out)

    def figure(self, title: str = "accuracy drop under appearance shifts"):
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt
        import numpy as np

        conds = self.conditions[1:]
        fig, ax = plt.subplots(figsize=(min(11.0, max(5.0, 0.25 * len(conds) * len(self.models) + 2)), 3.6))
        w = 0.8 / max(len(self.models), 1)
        xs = np.arange(len(conds))
        for i, m in enumerate(self.models):
            drops = [self.acc[m]["clean"] - self.acc[m][c] for c in conds]
            ax.bar(xs + (i - (len(self.models) - 1) / 2) * w, drops, w, label=m)
        ax.set_xticks(xs, conds, rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("top-1 drop (points)")
        ax.set_title(title, fontsize=10)
        ax.axhline(0, color="k", lw=0.5)
        ax.legend(fontsize=7)
        fig.tight_layout()
        return fig


def shift_table(classifiers: list[Classifier], ds: TensorDataset, shifts: list[str],
                device: str = "cpu", progress: Callable[[str], None] | None = None) -> ShiftTable:
    """Accuracy of each classifier on ``ds`` clean and under each shift (``NAME[=STRENGTH]``);
    the shifted images are made once and shared by all models."""
    conds = ["clean"] + shifts
    names = [c.name for c in classifiers]
    names = [n if names.count(n) == 1 else f"{n}#{i + 1}" for i, n in enumerate(names)]
    table = ShiftTable(names, conds, {n: {} for n in names}, len(ds))
    dev = torch.device(device)
    for cond in conds:
        if progress:
            progress(cond)
        if cond == "clean":
            d = ds
        else:
            name, strength = parse_shift(cond)
            d = shifted(ds, name, strength, device=device)
        for n, c in zip(names, classifiers):
            table.acc[n][cond] = evaluate(c.model, d, c.mean, c.std, dev)[0]
    return table


def _stage_of(name: str) -> str:
    m = re.match(r"(?:features\.)?(layer\d+|denseblock\d+|transition\d+)", name)
    return m.group(1) if m else "stem"


def gates_figure(clf: Classifier, title: str | None = None):
    """``norms.gate_report`` of a BIN model with ρ histograms grouped by stage (BIN Fig. 2)."""
    rep = norms.gate_report(clf.model)
    if not rep.layers:
        raise ValueError(f"{clf.name} has no BIN gates (norm {clf.config.norm!r})")
    return rep, rep.figure(title=title or f"BIN gates ρ of {clf.name}", group_of=_stage_of)


# ---- IBN-Net feature divergence ------------------------------------------------------------

def channel_sym_kl(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """IBN-Net (Pan et al. 2018, Sec. 3.1): fit a Gaussian per channel to the values in ``a``
    (N_a×C) and ``b`` (N_b×C); the symmetric KL divergence KL(A‖B)+KL(B‖A) per channel (C),
    KL(A‖B) = log(σ_B/σ_A) + (σ_A² + (μ_A−μ_B)²)/(2σ_B²) − ½."""
    ma, mb = a.mean(0), b.mean(0)
    va, vb = a.var(0, unbiased=False) + eps, b.var(0, unbiased=False) + eps
    kl_ab = 0.5 * torch.log(vb / va) + (va + (ma - mb) ** 2) / (2 * vb) - 0.5
    kl_ba = 0.5 * torch.log(va / vb) + (vb + (ma - mb) ** 2) / (2 * va) - 0.5
    return kl_ab + kl_ba


def gaussian_sym_kl(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-8) -> float:
    """``channel_sym_kl`` averaged over channels: IBN-Net's feature divergence."""
    return float(channel_sym_kl(a, b, eps).mean())


def probe_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The modules whose outputs are compared: the stem norm and every residual block / dense
    block / transition, in depth order."""
    from .cifar_resnet import CifarBasicBlock
    from .densenet_ibn import _DenseBlock, _Transition
    from .resnet_ibn import BasicBlock, Bottleneck

    kinds = (CifarBasicBlock, BasicBlock, Bottleneck, _DenseBlock, _Transition)
    out = [(n, m) for n, m in model.named_modules() if isinstance(m, kinds)]
    stem = getattr(model, "bn1", None)
    return ([("bn1", stem)] if stem is not None else []) + out


@torch.no_grad()
def _features(model: nn.Module, ds: TensorDataset, mean, std, device, batch: int = 250):
    layers = probe_layers(model)
    acc: dict[str, dict[str, list[torch.Tensor]]] = {n: {"mu": [], "sigma": [], "kept": []}
                                                     for n, _ in layers}

    def hook(name):
        def fn(_m, _inp, out):
            x = out.float()
            mu = x.mean((2, 3))
            sigma = x.std((2, 3), unbiased=False)
            xn = (x - mu[:, :, None, None]) / (sigma[:, :, None, None] + 1e-5)
            acc[name]["mu"].append(mu.cpu())
            acc[name]["sigma"].append(sigma.cpu())
            acc[name]["kept"].append(torch.relu(xn).mean((2, 3)).cpu())
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in layers]
    try:
        model.eval()
        for i in range(0, len(ds), batch):
            model(normalize(ds.x[i:i + batch].to(device), mean, std))
    finally:
        for h in handles:
            h.remove()
    return {n: {k: torch.cat(v) for k, v in d.items()} for n, d in acc.items()}


@dataclass
class Divergence:
    """Per-layer divergence between domains A and B (see ``feature_divergence``)."""

    layers: list[str]
    total: list[float]
    # D(μ) as the median over channels: a channel that one domain makes constant (a colour
    # channel under grayscale) has an unbounded KL and can carry the whole channel mean
    total_median: list[float]
    removed_std: list[float]
    kept: list[float]
    domains: tuple[str, str]
    model: str = ""

    def to_markdown(self) -> str:
        out = ["| layer | D(μ): IBN-Net, removed by IN | D(μ) median over channels | "
               "D(σ): removed by IN | D after IN: kept |", "|---|---:|---:|---:|---:|"]
        for row in zip(self.layers, self.total, self.total_median, self.removed_std, self.kept):
            out.append(f"| {row[0]} | {row[1]:.4f} | {row[2]:.4f} | {row[3]:.4f} | {row[4]:.4f} |")
        return "\n".join(out)


def feature_divergence(clf: Classifier, a: TensorDataset, b: TensorDataset,
                       names: tuple[str, str] = ("A", "B"), device: str = "cpu") -> Divergence:
    """IBN-Net's feature divergence, per probed layer (stem and every block output), between the
    images of domain A and domain B, split by what instance normalisation does to it.

    For each layer output x (N×C×H×W) and image n, channel c: μ = spatial mean, σ = spatial std,
    and x̂ = (x − μ)/σ (IN without affine). Then, with ``gaussian_sym_kl`` over the images of
    A vs B, averaged over channels:
    - total = D(μ): IBN-Net's measure (Gaussians fitted to the per-channel feature means). It is
      carried entirely by the instance statistics, which IN removes.
    - removed_std = D(σ): the divergence of the per-instance contrast, also removed by IN.
    - kept = D(mean of ReLU(x̂)): what survives instance normalisation (x̂ itself has mean 0 in
      every channel; the following ReLU makes its surviving shape visible as a mean).
    """
    dev = torch.device(device)
    fa = _features(clf.model, a, clf.mean, clf.std, dev)
    fb = _features(clf.model, b, clf.mean, clf.std, dev)
    layers = list(fa)
    per_channel = [channel_sym_kl(fa[n]["mu"], fb[n]["mu"]) for n in layers]
    return Divergence(layers,
                      [float(c.mean()) for c in per_channel],
                      [float(c.median()) for c in per_channel],
                      [gaussian_sym_kl(fa[n]["sigma"], fb[n]["sigma"]) for n in layers],
                      [gaussian_sym_kl(fa[n]["kept"], fb[n]["kept"]) for n in layers],
                      names, clf.name)


def divergence_figure(divs: list[Divergence]):
    """Divergence by depth, one panel per model."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(divs), figsize=(4.2 * len(divs), 3.2), squeeze=False)
    for ax, d in zip(axes[0], divs):
        xs = range(len(d.layers))
        ax.plot(xs, d.total, "o-", label="D(μ) (IBN-Net; IN removes)")
        ax.plot(xs, d.removed_std, "s--", label="D(σ) (IN removes)")
        ax.plot(xs, d.kept, "^-", label="D after IN (kept)")
        ax.set_yscale("log")
        ax.set_xticks(list(xs), d.layers, rotation=60, ha="right", fontsize=6)
        ax.set_title(f"{d.model}: {d.domains[0]} vs {d.domains[1]}", fontsize=9)
        ax.set_ylabel("symmetric KL", fontsize=8)
        ax.legend(fontsize=6)
    fig.tight_layout()
    return fig


def domain_sets(clf: Classifier, data: str, domains: list[str], limit: int | None,
                device: str = "cpu") -> dict[str, TensorDataset]:
    """Datasets for divergence: PACS domain names with ``pacs:ROOT``; with other data,
    ``test`` (the test set) or ``shift:NAME[=S]`` (the test set under a shift)."""
    if len(domains) != 2:
        raise ValueError(f"--domains needs exactly two, got {domains}")
    out = {}
    if data.startswith("pacs:"):
        sets = eval_sets(clf, data, ",".join(d for d in domains if not d.startswith("shift:")),
                         limit)
    else:
        sets = eval_sets(clf, data, None, limit)
    base = next(iter(sets.values()))
    for d in domains:
        if d.startswith("shift:"):
            name, s = parse_shift(d[6:])
            out[d] = shifted(base, name, s, device=device)
        elif d in sets:
            out[d] = sets[d]
        else:
            raise ValueError(f"unknown domain {d!r}; use {', '.join(sets)} or shift:NAME")
    return out
