"""The norms lab: what a norm layer does to an image's features, for style models and classifiers
alike, and how classifiers with different norms change their minds under an appearance shift.

These are the analyses behind the web UI's Norms-lab and Shift-explorer panels, as plain
functions over loaded models (``stylize.StyleModel`` / ``classify.Classifier``), so the command
line and notebooks reach them too. They compose both pipelines, hence they live in experiments/.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Union

import torch
from PIL import Image
from torch import nn

import classify
import stylize
from classify.data import fit_square, normalize, pil_to_uint8
from engine.images import to_tensor

LabModel = Union["stylize.StyleModel", "classify.Classifier"]

# the style network sees a reduced copy: feature statistics do not need full resolution
STYLE_PROBE_SIZE = 256


def network_of(model: LabModel) -> nn.Module:
    """The ``nn.Module`` inside a loaded style model or classifier."""
    if isinstance(model, stylize.StyleModel):
        return model.net
    if isinstance(model, classify.Classifier):
        return model.model
    raise ValueError(f"expected a style model or a classifier, got {type(model).__name__}")


def norm_layers(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """Top-level normalisation layers of ``net`` in forward order (IBN's inner IN/BN halves are
    part of their IBN layer, not listed on their own)."""
    from norms.conditional import ConditionalNorm
    from norms.layers import NORM_LAYERS

    out: list[tuple[str, nn.Module]] = []
    # a conditional norm wraps (and never calls) its inner norm: hook the wrapper
    for name, mod in net.named_modules():
        if isinstance(mod, (*NORM_LAYERS, ConditionalNorm)) and not any(
                name.startswith(p + ".") for p, _ in out):
            out.append((name, mod))
    return out


def network_input(model: LabModel, image: Image.Image) -> torch.Tensor:
    """The 1×3×H×W input tensor the library would feed ``model`` for ``image``: RGB 0–255 at most
    ``STYLE_PROBE_SIZE`` px for a style network; the classifier's centre crop, normalised with its
    training mean/std (as ``classify.predict`` does)."""
    image = image.convert("RGB")
    if isinstance(model, stylize.StyleModel):
        image = image.copy()
        image.thumbnail((STYLE_PROBE_SIZE, STYLE_PROBE_SIZE))
        return to_tensor(image)
    if isinstance(model, classify.Classifier):
        x = pil_to_uint8(fit_square(image, int(model.image_size)))[None]
        return normalize(x, list(model.mean), list(model.std))
    raise ValueError(f"expected a style model or a classifier, got {type(model).__name__}")


@dataclass
class ChannelStats:
    """Per-channel statistics of one norm layer's output for several images."""

    model: str
    layer: str
    mean: list[list[float]]  # [image][channel]: spatial mean of the layer's output
    std: list[list[float]]  # [image][channel]: spatial standard deviation

    def mean_abs_delta(self, what: str = "mean") -> float:
        """Mean over channels of |statistic(image 0) − statistic(image 1)|: how far the second
        image (e.g. a shifted copy) moves this layer's channel statistics. 0 = untouched."""
        a, b = (self.mean if what == "mean" else self.std)[:2]
        return sum(abs(x - y) for x, y in zip(a, b)) / max(1, len(a))


def channel_stats(model: LabModel, images: list[Image.Image], depth: float = 0.0,
                  name: str = "") -> ChannelStats:
    """Per-channel mean/std of the output of the norm layer at relative ``depth`` (0 = first norm
    layer, 1 = last) for each image. The BIN paper's point (Nam & Kim 2018, Sec. 3): IN outputs
    keep the same channel statistics whatever the style, BN's follow it."""
    if not 0.0 <= float(depth) <= 1.0:
        raise ValueError(f"layer depth must be between 0 and 1, got {depth}")
    # hooks on a private copy: other requests share the cached network
    net = copy.deepcopy(network_of(model)).eval()
    layers = norm_layers(net)
    if not layers:
        raise ValueError(f"{name or 'the model'} has no normalisation layers")
    layer_name, layer = layers[round(float(depth) * (len(layers) - 1))]
    captured: list[torch.Tensor] = []
    handle = layer.register_forward_hook(lambda _m, _i, o: captured.append(o.detach()))
    try:
        dev = next(net.parameters()).device
        with torch.inference_mode():
            for im in images:
                net(network_input(model, im).to(dev))
    finally:
        handle.remove()
    feats = [f[0].float().flatten(1) for f in captured]  # C×(H·W) per image
    return ChannelStats(name or getattr(model, "name", ""), layer_name,
                        [f.mean(1).tolist() for f in feats], [f.std(1).tolist() for f in feats])


def feature_figure(stats: list[ChannelStats], shift: str):
    """Per-channel mean and std, original vs shifted, one row per model (matplotlib figure)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(stats), 2, figsize=(9, 2.5 * len(stats)), squeeze=False)
    for row, s in zip(axes, stats):
        for ax, what, vals in ((row[0], "mean", s.mean), (row[1], "std", s.std)):
            ax.plot(vals[0], lw=1, label="original")
            ax.plot(vals[1], lw=1, label=f"shifted ({shift})")
            ax.set_title(f"{s.model} · {s.layer} · channel {what} · mean |Δ| "
                         f"{s.mean_abs_delta(what):.3g}", fontsize=8)
            ax.set_xlabel("channel index", fontsize=7)
            ax.set_ylabel(f"channel {what} of the layer output", fontsize=7)
            # a flat line must look flat: no offset notation, a span of at least 10% of the scale
            lo, hi = min(min(v) for v in vals), max(max(v) for v in vals)
            span = max(hi - lo, 0.1 * max(abs(lo), abs(hi), 1.0))
            mid = (hi + lo) / 2
            ax.set_ylim(mid - 0.55 * span, mid + 0.55 * span)
            ax.ticklabel_format(axis="y", useOffset=False)
            ax.tick_params(labelsize=7)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


@dataclass
class ShiftRow:
    """One classifier's top-1 before and after an appearance shift."""

    model: str
    norm: str
    top1: str
    p_top1: float
    shifted_top1: str
    p_shifted_top1: float
    p_kept: float  # probability of the original top-1 class on the shifted image

    @property
    def changed(self) -> bool:
        return self.top1 != self.shifted_top1


def shift_rows(classifiers: dict[str, Any], image: Image.Image,
               shifted: Image.Image) -> list[ShiftRow]:
    """Per classifier (display name → ``classify.Classifier``): top-1 on ``image``, top-1 on its
    ``shifted`` copy, and the probability the original top-1 class keeps after the shift."""
    rows = []
    for label, clf in classifiers.items():
        n = len(clf.class_names)
        before = classify.predict(clf, image, topk=n)
        after = dict(classify.predict(clf, shifted, topk=n))
        top, p = before[0]
        s_top, s_p = max(after.items(), key=lambda kv: kv[1])
        norm = getattr(clf.config, "norm", None) or (clf.meta or {}).get("norm") or "?"
        rows.append(ShiftRow(label, str(norm), top, float(p), s_top, float(s_p),
                             float(after.get(top, 0.0))))
    return rows


def shift_rows_markdown(rows: list[ShiftRow]) -> str:
    """A markdown table of ``shift_rows`` (⚠ where the top-1 class changed)."""
    if not rows:
        return ""
    out = ["| model | norm | top-1 (original) | top-1 (shifted) | p(original top-1) after |",
           "|---|---|---|---|---:|"]
    for r in rows:
        flag = " ⚠" if r.changed else ""
        out.append(f"| {r.model} | {r.norm} | {r.top1} ({r.p_top1:.0%}) | {r.shifted_top1} "
                   f"({r.p_shifted_top1:.0%}){flag} | {r.p_kept:.0%} |")
    return "\n".join(out)


def classifier_view(clf: Any, image: Image.Image, display: int = 160) -> Image.Image:
    """What the classifier sees: the centre crop at its input size (e.g. 32×32 for CIFAR nets),
    enlarged with nearest-neighbour to about ``display`` px so its pixels stay visible."""
    x = fit_square(image.convert("RGB"), int(clf.image_size))
    k = max(1, round(display / max(x.size)))
    return x.resize((x.width * k, x.height * k), Image.NEAREST)
