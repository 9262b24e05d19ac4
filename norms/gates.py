"""Training support for gated norms (BIN's ρ): optimizer groups, clipping and reports.

The BIN paper (Sec. 3.2) trains ρ with a 10× learning rate and no weight decay, and clips it to
[0, 1] after every parameter update.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from .catalog import CATALOG
from .conditional import ConditionalNorm
from .layers import NORM_LAYERS

# Layers whose ``gate`` is a learned ρ in [0, 1]: the catalog's gated norms and their conditional
# variants (a BN+IN ``gate`` is a fixed buffer, not a parameter, and is skipped below).
GATED_LAYERS: tuple[type[nn.Module], ...] = tuple(s.layer for s in CATALOG.values() if s.gated)
# Conditional BIN holds ρ as an S×C table on the wrapper (its inner layer has none left).
_GATED = GATED_LAYERS + (ConditionalNorm,)
_NORMS = NORM_LAYERS + (ConditionalNorm,)


def iter_gates(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(qualified name, ρ parameter) of every gated norm layer in ``model``, in module order
    (conditional BIN: its S×C table of per-style gates)."""
    for name, module in model.named_modules():
        if isinstance(module, _GATED) and isinstance(getattr(module, "gate", None), nn.Parameter):
            yield (f"{name}.gate" if name else "gate"), module.gate


def named_norm_parameters(model: nn.Module) -> Iterator[tuple[str, nn.Parameter]]:
    """(qualified name, parameter) of every normalization parameter of ``model`` — γ, β, ρ of
    every norm layer (per-style tables of conditional ones) and SN's mixture weights — once
    each, in module order. What "fine-tune only the norm parameters" trains."""
    seen: set[int] = set()
    for mname, module in model.named_modules():
        if not isinstance(module, _NORMS):
            continue
        for pname, p in module.named_parameters(recurse=False):
            if id(p) not in seen:
                seen.add(id(p))
                yield (f"{mname}.{pname}" if mname else pname), p


def norm_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    """The parameters of ``named_norm_parameters``: ``torch.optim.Adam(norm_parameters(net))``."""
    for _, p in named_norm_parameters(model):
        yield p


def param_groups(model: nn.Module, lr: float, weight_decay: float,
                 gate_lr_mult: float = 10.0) -> list[dict[str, Any]]:
    """Optimizer parameter groups: gates (lr·gate_lr_mult, no decay), norm affine parameters and
    biases (no decay), everything else (``weight_decay``). Every trainable parameter is in exactly
    one group; empty groups are left out. Each group carries a ``name``."""
    gate_ids = {id(p) for _, p in iter_gates(model)}
    norm_ids = {id(p) for _, p in named_norm_parameters(model)}
    gates, no_decay, decay, seen = [], [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if id(p) in gate_ids:
            gates.append(p)
        elif id(p) in norm_ids or name.endswith("bias") or p.ndim <= 1:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = [
        {"name": "gates", "params": gates, "lr": lr * gate_lr_mult, "weight_decay": 0.0},
        {"name": "no_decay", "params": no_decay, "lr": lr, "weight_decay": 0.0},
        {"name": "decay", "params": decay, "lr": lr, "weight_decay": weight_decay},
    ]
    return [g for g in groups if g["params"]]


@torch.no_grad()
def clip_gates_(model: nn.Module) -> int:
    """Clamp every gate of ``model`` into [0, 1] in place; returns how many gate tensors."""
    count = 0
    for _, gate in iter_gates(model):
        gate.clamp_(0.0, 1.0)
        count += 1
    return count


def attach_gate_clipping(optimizer: torch.optim.Optimizer, model: nn.Module):
    """Make ``optimizer.step()`` clip the model's gates to [0, 1] after every step by itself.

    Uses an optimizer step post-hook, so no training loop can forget the clipping. Returns the
    hook handle (``.remove()`` detaches it).
    """
    gates = [g for _, g in iter_gates(model)]

    @torch.no_grad()
    def _clip(_opt, _args, _kwargs) -> None:
        for g in gates:
            g.clamp_(0.0, 1.0)

    return optimizer.register_step_post_hook(_clip)


@dataclass
class GateLayer:
    name: str
    depth: int
    values: torch.Tensor
    mean: float
    std: float
    frac_in: float  # share of channels with ρ < 0.5 (closer to IN)
    frac_bn_end: float  # share with ρ > 0.9
    frac_in_end: float  # share with ρ < 0.1


@dataclass
class GateReport:
    """Per-layer statistics of BIN gates (ρ), in network order (depth 0 = shallowest)."""

    layers: list[GateLayer] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.layers)

    def to_markdown(self) -> str:
        rows = ["| depth | layer | channels | mean ρ | std | ρ<0.1 | ρ<0.5 | ρ>0.9 |",
                "|---:|---|---:|---:|---:|---:|---:|---:|"]
        for L in self.layers:
            rows.append(f"| {L.depth} | {L.name} | {L.values.numel()} | {L.mean:.3f} | {L.std:.3f}"
                        f" | {L.frac_in_end:.0%} | {L.frac_in:.0%} | {L.frac_bn_end:.0%} |")
        return "\n".join(rows)

    def figure(self, groups: int | None = None, group_of: Callable[[str], str] | None = None,
               title: str = "BIN gate ρ by depth"):
        """Histograms of ρ by depth (BIN paper, Fig. 2). Layers are pooled into ``groups``
        consecutive depth bins (default: one per layer up to 8 layers, else 6 bins) or by
        ``group_of(layer_name)`` (e.g. the stage). Returns a matplotlib Figure."""
        if not self.layers:
            raise ValueError("no gated (BIN) layers in this model: nothing to plot")
        bins: dict[str, list[torch.Tensor]] = {}
        if group_of is not None:
            for L in self.layers:
                bins.setdefault(group_of(L.name), []).append(L.values)
        else:
            n = len(self.layers)
            k = groups or (n if n <= 8 else 6)
            for i, L in enumerate(self.layers):
                b = min(i * k // n, k - 1)
                lo, hi = b * n // k, (b + 1) * n // k - 1
                label = L.name if n == k else f"layers {lo}–{hi}"
                bins.setdefault(label, []).append(L.values)
        import numpy as np

        return histogram_figure({label: np.histogram(torch.cat(vals).float().numpy(), HIST_BINS,
                                                     (0.0, 1.0))[0].tolist()
                                 for label, vals in bins.items()}, title)


HIST_BINS = 20  # ρ histograms over [0, 1]


def histogram_figure(hists: dict[str, list[int]], title: str):
    """One panel per group of ``HIST_BINS`` ρ counts over [0, 1] (BIN paper Fig. 2): drawn from
    counts, so a histogram kept without its model (a report's ledger) draws the same figure."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(hists), figsize=(2.6 * len(hists), 2.6), squeeze=False)
    width = 1.0 / HIST_BINS
    for ax, (label, counts) in zip(axes[0], hists.items()):
        ax.bar([i * width for i in range(len(counts))], counts, width=width, align="edge",
               color="#4a7ab5")
        ax.set_title(label, fontsize=8)
        ax.set_xlabel("ρ  (0 = IN, 1 = BN)", fontsize=7)
        ax.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@torch.no_grad()
def gate_report(model: nn.Module) -> GateReport:
    """Collect per-layer ρ statistics of every BIN layer in ``model`` (see ``GateReport``)."""
    report = GateReport()
    for depth, (name, gate) in enumerate(iter_gates(model)):
        # conditional BIN holds one ρ row per style (styles × C): the report pools every row
        v = gate.detach().float().cpu().clamp(0, 1).flatten()
        report.layers.append(GateLayer(
            name=name.removesuffix(".gate"), depth=depth, values=v, mean=v.mean().item(),
            std=v.std(unbiased=False).item(), frac_in=(v < 0.5).float().mean().item(),
            frac_bn_end=(v > 0.9).float().mean().item(), frac_in_end=(v < 0.1).float().mean().item(),
        ))
    return report


@torch.no_grad()
def set_gates_(model: nn.Module, value: float | None = None, shift: float = 0.0) -> int:
    """Override every ρ (e.g. at inference): set it to ``value`` or move it by ``shift``
    (negative → toward IN, positive → toward BN), clipped to [0, 1]. Returns the layer count."""
    count = 0
    for _, gate in iter_gates(model):
        if value is not None:
            gate.fill_(value)
        else:
            gate.add_(shift)
        gate.clamp_(0.0, 1.0)
        count += 1
    return count
