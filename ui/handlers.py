"""The UI's handler functions: plain Python over the stylize / classify / norms libraries.

Every function here takes and returns plain values (PIL images, strings, lists, matplotlib
figures) and raises ``ValueError`` with one line on bad input; ``ui.app`` wires them to gradio
components and turns those errors into ``gr.Error`` messages. No gradio import here.
"""
from __future__ import annotations

import copy
import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

import experiments  # noqa: F401  (registers style:MODEL shifts with classify)
import norms
from engine.devices import resolve_device

from .config import UIConfig

SHIPPED_TAG = "shipped"
TRAINED_PREFIX = "ui:"


def need(module: str, attr: str) -> Any:
    """``module.attr`` of our own libraries, or a one-line ``ValueError`` saying that this build
    does not have it (the UI shows that message instead of pretending to work)."""
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise ValueError(f"the {module} package cannot be imported here ({exc})") from None
    fn = getattr(mod, attr, None)
    if fn is None:
        raise ValueError(f"{module}.{attr} is not available in this build of normlab")
    return fn


def device_of(cfg: UIConfig) -> str:
    return str(resolve_device(cfg.device))


# --------------------------------------------------------------------------- model lists

def model_choices(cfg: UIConfig, kind: str) -> list[tuple[str, str]]:
    """(label, value) pairs for a model dropdown: shipped models by name, then the models trained
    in this UI as ``ui:<name>``. Missing libraries give an empty list."""
    lister = {"stylize": ("stylize", "list_models"), "classify": ("classify", "list_shipped")}[kind]
    try:
        shipped = list(need(*lister)())
    except ValueError:
        shipped = []
    out = [(f"{n} ({SHIPPED_TAG})", n) for n in shipped]
    out += [(f"{n} (trained here)", TRAINED_PREFIX + n) for n in cfg.registry.names(kind)]
    return out


def lab_choices(cfg: UIConfig) -> list[tuple[str, str]]:
    """Models of both kinds for the Norms lab, values ``stylize:<value>`` / ``classify:<value>``."""
    return [(f"{kind}: {label}", f"{kind}:{value}")
            for kind in ("stylize", "classify") for label, value in model_choices(cfg, kind)]


def resolve_spec(cfg: UIConfig, kind: str, choice: str | None) -> str:
    """The library spec (shipped name or file path) behind a dropdown value; ``ValueError`` for a
    value that is not on the list (API clients can send anything)."""
    if not choice:
        raise ValueError(f"pick a {'style' if kind == 'stylize' else 'classifier'} model first")
    if choice.startswith(TRAINED_PREFIX):
        p = cfg.registry.path_of(kind, choice[len(TRAINED_PREFIX):])
        if p is not None:
            return str(p)
    elif choice in {v for _, v in model_choices(cfg, kind)}:
        return choice
    known = ", ".join(v for _, v in model_choices(cfg, kind)) or "none"
    raise ValueError(f"unknown {kind} model {choice!r}; available: {known}")


def load_style(cfg: UIConfig, choice: str | None, upload: str | None = None):
    """The ``stylize.StyleModel`` for a dropdown value, or for an uploaded model file (which wins)."""
    load = need("stylize", "load_model")
    if upload:
        suffix = Path(upload).suffix.lower()
        if suffix not in {".safetensors", ".pth", ".pt"}:
            raise ValueError(f"model files must be .safetensors or .pth, got {Path(upload).name}")
        return load(upload, device=device_of(cfg))
    return load(resolve_spec(cfg, "stylize", choice), device=device_of(cfg))


def load_classifier(cfg: UIConfig, choice: str | None):
    return need("classify", "load_classifier")(resolve_spec(cfg, "classify", choice),
                                               device=device_of(cfg))


def check_image(cfg: UIConfig, image: Image.Image | None, what: str = "an image") -> Image.Image:
    """The uploaded image as RGB; ``ValueError`` when missing or over the pixel limit."""
    if image is None:
        raise ValueError(f"upload {what} first")
    w, h = image.size
    if w * h > cfg.max_pixels:
        raise ValueError(f"the image is {w}×{h} = {w * h / 1e6:.1f} MP; this server accepts at "
                         f"most {cfg.max_pixels / 1e6:.0f} MP")
    return image if image.mode == "RGB" else image.convert("RGB")


# --------------------------------------------------------------------------- stylize

def stylize(cfg: UIConfig, image: Image.Image | None, choice: str | None, upload: str | None = None,
            strength: float = 1.0, preserve_color: bool = False, max_size: int | None = None,
            gate: float | None = None) -> Image.Image:
    """Stylize one image; the output has the input's size. ``max_size`` 0/None = full size;
    ``gate`` None = the learned ρ, else push every ρ toward IN (-1) or BN (+1)."""
    image = check_image(cfg, image)
    model = load_style(cfg, choice, upload)
    if gate is not None and not model.has_gates:
        gate = None  # the slider is hidden for gate-less models; ignore a stale value
    return need("stylize", "stylize_image")(
        model, image, max_size=int(max_size) if max_size else None,
        preserve_color=bool(preserve_color), strength=float(strength), gate=gate,
        device=device_of(cfg))


def style_model_info(cfg: UIConfig, choice: str | None, upload: str | None = None
                     ) -> tuple[str, bool]:
    """(markdown about the model, whether it has BIN gates) for the Stylize tab."""
    if not choice and not upload:
        return "No model selected.", False
    model = load_style(cfg, choice, upload)
    meta = model.meta or {}
    shown = Path(upload).name if upload else choice
    lines = [f"**{shown}** · norm `{model.config.norm}`"]
    lines += [f"{key}: {meta[key]}" for key in ("style", "steps") if key in meta]
    if model.has_gates:
        rep = norms.gate_report(model.net)
        mean = torch.cat([L.values for L in rep.layers]).mean().item()
        lines.append(f"BIN gates: {len(rep.layers)} layers, mean ρ {mean:.2f} (0 = IN, 1 = BN); "
                     "the gate slider overrides them")
    return " · ".join(lines), model.has_gates


def compare(cfg: UIConfig, image: Image.Image | None, choices: list[str] | None,
            max_size: int = 512) -> Image.Image:
    """One labelled grid: the image through each chosen style model."""
    image = check_image(cfg, image)
    if not choices:
        raise ValueError("pick at least one model to compare")
    models = [load_style(cfg, c) for c in choices]
    return need("stylize", "compare_grid")(models, image, max_size=int(max_size or 512))


# --------------------------------------------------------------------------- classify

def classify(cfg: UIConfig, image: Image.Image | None, choice: str | None,
             topk: int = 5) -> dict[str, float]:
    """Top-k {class: probability} for one image (the shape ``gr.Label`` shows)."""
    image = check_image(cfg, image)
    clf = load_classifier(cfg, choice)
    return {name: float(p) for name, p in
            need("classify", "predict")(clf, image, topk=max(1, int(topk)))}


def shift_names() -> list[str]:
    """The appearance shifts classify offers, plus ``style:<model>`` for each style model."""
    try:
        names = list(need("classify", "SHIFTS"))
    except ValueError:
        return []
    try:
        names += [f"style:{n}" for n in need("stylize", "list_models")()
                  if f"style:{n}" not in names]
    except ValueError:
        pass
    return names


def shift_range(shift: str | None) -> tuple[float, float, float]:
    """(low, high, default) strength of a shift in its natural units (``style:*``: 0–1)."""
    spec = need("classify", "SHIFTS").get(shift or "")
    if spec is None:
        return 0.0, 1.0, 1.0
    return float(spec.lo), float(spec.hi), float(spec.default)


def apply_shift(cfg: UIConfig, image: Image.Image, shift: str | None,
                strength: float | None) -> Image.Image:
    """The image under an appearance shift (``classify.apply_shift``; None = its default)."""
    if not shift:
        raise ValueError("pick a shift")
    return need("classify", "apply_shift")(image, shift, None if strength is None
                                           else float(strength), device=device_of(cfg))


@dataclass
class ShiftRow:
    model: str
    norm: str
    top1: str
    p_top1: float
    shifted_top1: str
    p_shifted_top1: float
    p_kept: float  # probability of the original top-1 class on the shifted image


def shift_explorer(cfg: UIConfig, image: Image.Image | None, choices: list[str] | None,
                   shift: str, strength: float) -> tuple[Image.Image, list[ShiftRow]]:
    """The shifted image and, per classifier, top-1 before and after the shift."""
    image = check_image(cfg, image)
    if not choices:
        raise ValueError("pick at least one classifier")
    shifted = apply_shift(cfg, image, shift, strength)
    predict = need("classify", "predict")
    rows = []
    for c in choices:
        clf = load_classifier(cfg, c)
        n = len(clf.class_names)
        before = predict(clf, image, topk=n)
        after = dict(predict(clf, shifted, topk=n))
        top, p = before[0]
        s_top, s_p = max(after.items(), key=lambda kv: kv[1])
        norm = getattr(clf.config, "norm", None) or (clf.meta or {}).get("norm") or "?"
        rows.append(ShiftRow(c, str(norm), top, float(p), s_top, float(s_p),
                             float(after.get(top, 0.0))))
    return shifted, rows


def shift_table(rows: list[ShiftRow]) -> str:
    """Markdown for the shift explorer."""
    if not rows:
        return ""
    out = ["| model | norm | top-1 (original) | top-1 (shifted) | p(original top-1) after |",
           "|---|---|---|---|---:|"]
    for r in rows:
        flag = "" if r.top1 == r.shifted_top1 else " ⚠"
        out.append(f"| {r.model} | {r.norm} | {r.top1} ({r.p_top1:.0%}) | {r.shifted_top1} "
                   f"({r.p_shifted_top1:.0%}){flag} | {r.p_kept:.0%} |")
    return "\n".join(out)


# --------------------------------------------------------------------------- norms lab

def lab_network(cfg: UIConfig, choice: str | None):
    """(kind, nn.Module, loaded library object) for a Norms-lab dropdown value."""
    if not choice or ":" not in choice:
        raise ValueError("pick a model first")
    kind, value = choice.split(":", 1)
    if kind == "stylize":
        m = load_style(cfg, value)
        return kind, m.net, m
    if kind == "classify":
        c = load_classifier(cfg, value)
        return kind, c.model, c
    raise ValueError(f"unknown model kind {kind!r}")


def gate_histograms(cfg: UIConfig, choice: str | None):
    """(matplotlib figure or None, markdown) of the BIN gates ρ of a model, by depth."""
    _, net, _ = lab_network(cfg, choice)
    rep = norms.gate_report(net)
    if not rep:
        return None, (f"`{choice}` has no BIN gates (ρ): its norm layers are fixed, so there is "
                      "nothing learned to show. Pick a BIN model.")
    return rep.figure(title=f"BIN gate ρ by depth — {choice}"), rep.to_markdown()


def norm_layers(net) -> list[tuple[str, Any]]:
    """Top-level normalisation layers of ``net`` in forward order (IBN's inner IN/BN excluded)."""
    from norms.layers import NORM_LAYERS

    out: list[tuple[str, Any]] = []
    for name, mod in net.named_modules():
        if isinstance(mod, NORM_LAYERS) and not any(name.startswith(p + ".") for p, _ in out):
            out.append((name, mod))
    return out


def _to_input(kind: str, lib_obj, image: Image.Image):
    """The network input tensor (1×3×H×W) for an image, as the library feeds it."""
    if kind == "stylize":
        from stylize.images import to_tensor

        image = image.copy()
        image.thumbnail((256, 256))
        return to_tensor(image)  # RGB 0–255, as TransformerNet takes it
    from classify.data import fit_square, normalize, pil_to_uint8  # as classify.predict does

    x = pil_to_uint8(fit_square(image, int(lib_obj.image_size)))[None]
    return normalize(x, list(lib_obj.mean), list(lib_obj.std))


@dataclass
class ChannelStats:
    model: str
    layer: str
    mean: list[list[float]]  # [image][channel]: per-channel spatial mean of the layer's output
    std: list[list[float]]


def feature_stats(cfg: UIConfig, image: Image.Image | None, choices: list[str] | None,
                  depth: float, shift: str, strength: float) -> tuple[Image.Image, list[ChannelStats]]:
    """Per-channel mean/std of a norm layer's output (at relative ``depth`` 0–1 of the model's
    norm layers) for the image and its shifted copy, for each chosen model — the BIN paper's
    point: IN outputs keep the same channel statistics whatever the style, BN's follow it."""
    image = check_image(cfg, image)
    if not choices:
        raise ValueError("pick at least one model")
    shifted = apply_shift(cfg, image, shift, strength)
    out = []
    for c in choices:
        kind, net, lib_obj = lab_network(cfg, c)
        net = copy.deepcopy(net)  # hooks on a private copy: other requests share the cached net
        layers = norm_layers(net)
        if not layers:
            raise ValueError(f"{c} has no normalisation layers")
        name, layer = layers[round(float(depth) * (len(layers) - 1))]
        captured: list[torch.Tensor] = []
        handle = layer.register_forward_hook(lambda _m, _i, o: captured.append(o.detach()))
        try:
            dev = next(net.parameters()).device
            with torch.inference_mode():
                for im in (image, shifted):
                    net(_to_input(kind, lib_obj, im).to(dev))
        finally:
            handle.remove()
        feats = [f[0].float().flatten(1) for f in captured]  # C×(H·W) per image
        out.append(ChannelStats(c, name, [f.mean(1).tolist() for f in feats],
                                [f.std(1).tolist() for f in feats]))
    return shifted, out


def feature_figure(stats: list[ChannelStats], shift: str):
    """Per-channel mean and std lines, original vs shifted, one row per model."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(stats), 2, figsize=(9, 2.3 * len(stats)), squeeze=False)
    for row, s in zip(axes, stats):
        for ax, what, vals in ((row[0], "channel mean", s.mean), (row[1], "channel std", s.std)):
            ax.plot(vals[0], lw=1, label="original")
            ax.plot(vals[1], lw=1, label=f"shifted ({shift})")
            gap = sum(abs(a - b) for a, b in zip(*vals)) / max(1, len(vals[0]))
            ax.set_title(f"{s.model} · {s.layer} · {what} · mean |Δ| {gap:.3g}", fontsize=8)
            # a flat line must look flat: no offset notation, a span of at least 10% of the scale
            lo, hi = min(min(v) for v in vals), max(max(v) for v in vals)
            span = max(hi - lo, 0.1 * max(abs(lo), abs(hi), 1.0))
            mid = (hi + lo) / 2
            ax.set_ylim(mid - 0.55 * span, mid + 0.55 * span)
            ax.ticklabel_format(axis="y", useOffset=False)
            ax.tick_params(labelsize=7)
        row[0].legend(fontsize=7)
    axes[-1][0].set_xlabel("channel", fontsize=8)
    axes[-1][1].set_xlabel("channel", fontsize=8)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- about

PAPERS = {
    "bn": "Ioffe & Szegedy, *Batch Normalization*, ICML 2015 — arXiv:1502.03167",
    "in": "Ulyanov, Vedaldi & Lempitsky, *Instance Normalization*, 2016 — arXiv:1607.08022",
    "bn_in": "Nam & Kim 2018 (the naive ensemble baseline of the BIN paper) — arXiv:1805.07925",
    "bin": "Nam & Kim, *Batch-Instance Normalization for Adaptively Style-Invariant Neural "
           "Networks*, NeurIPS 2018 — arXiv:1805.07925",
    "ibn": "Pan, Luo, Shi & Tang, *Two at Once: Enhancing Learning and Generalization Capacities "
           "via IBN-Net*, ECCV 2018 — arXiv:1807.09441",
    "gn": "Wu & He, *Group Normalization*, ECCV 2018 — arXiv:1803.08494",
    "ln": "Ba, Kiros & Hinton, *Layer Normalization*, 2016 — arXiv:1607.06450",
    "sn": "Luo, Ren, Peng, Zhang & Li, *Differentiable Learning-to-Normalize via Switchable "
          "Normalization*, ICLR 2019 — arXiv:1806.10779",
}


def about_markdown() -> str:
    """What each norm is, two lines each, with its paper."""
    parts = ["## The normalisation layers", ""]
    for name in norms.NORM_NAMES:
        parts.append(f"**{name}** — {norms.NORM_DESCRIPTIONS.get(name, '')}  ")
        parts.append(f"{PAPERS.get(name, '')}")
        parts.append("")
    parts += [
        "## The networks",
        "- Style transfer: Johnson, Alahi & Fei-Fei, *Perceptual Losses for Real-Time Style "
        "Transfer and Super-Resolution*, ECCV 2016 — arXiv:1603.08155 (layout of pytorch/examples' "
        "fast_neural_style).",
        "- Classification: He et al., *Deep Residual Learning*, CVPR 2016 (CIFAR ResNets), and "
        "IBN-Net's ResNet/ResNeXt/DenseNet variants.",
        "",
        "Everything here calls the same library functions as the `normlab` command line.",
    ]
    return "\n".join(parts)
