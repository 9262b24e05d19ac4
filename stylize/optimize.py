"""Slow but best: style transfer by optimising the image itself (Gatys, Ecker & Bethge, CVPR 2016).

The output image x minimises
    L(x) = α · ‖φ_c(x) − φ_c(p)‖² / ‖φ_c(p)‖²
         + β · mean over style scales f of Σ_l ‖G_l(↓f x) − G_l(↓f s)‖² / ‖G_l(↓f s)‖²
         + γ · TV(x)
for photo p and painting s (Gatys et al. eq. 1–7, with each term normalised by its target so that
the weights need no per-painting calibration; G is the Gram matrix normalised by C·H·W; ↓f an f×f
average pooling, so a shallow loss network also sees the painting's larger shapes). The image is
optimised coarse to fine (Gatys et al. 2017, "Controlling perceptual factors", Sec. 5): at 1/4,
then 1/2, then full size, each stage starting from the previous result upscaled, so the painting's
large structures form where they are cheap and the fine stage only adds detail. L-BFGS by default
(Gatys et al.), Adam as an option.

Any loss network ``stylize.losses.load_vgg_encoder`` reads works: the shared normalised VGG-19 up
to relu3_1 (taps relu1_1, relu2_1, relu3_1), or deeper taps when a user has the full weights.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .losses import downsample, gram_matrix

OPTIMIZERS = ("lbfgs", "adam")
_CHUNK = 10  # L-BFGS iterations per step() call: progress and cancel granularity


@dataclass
class OptimizeConfig:
    """Settings of one optimisation (the defaults: 512 px in about a minute or two of CPU)."""

    size: int | None = 512  # longest side of the output; None = the photo's size
    scales: list[int] = field(default_factory=lambda: [4, 2, 1])  # coarse-to-fine factors
    iterations: list[int] = field(default_factory=lambda: [150, 80, 40])  # per scale
    optimizer: str = "lbfgs"
    lr: float = 4.0  # Adam only, in 0–255 pixel units
    content_weight: float = 1.0
    style_weight: float = 5.0
    tv_weight: float = 0.0
    style_scales: list[int] = field(default_factory=lambda: [1, 2])
    style_size: int | None = None  # longest side of the painting at full scale; None = output's
    content_layer: str | None = None  # None: relu3_1 when the encoder has it
    preserve_color: bool = False
    seed: int = 0

    def validate(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; choose from {', '.join(OPTIMIZERS)}")
        if self.size is not None and not 32 <= self.size <= 8192:
            raise ValueError(f"--size must be 32–8192 px, got {self.size}")
        if not self.scales or any(int(s) < 1 or int(s) > 16 for s in self.scales):
            raise ValueError(f"--scales must be factors 1–16 (e.g. 4,2,1), got {self.scales}")
        if len(self.iterations) == 1 and len(self.scales) > 1:
            self.iterations = list(self.iterations) * len(self.scales)
        if len(self.iterations) != len(self.scales):
            raise ValueError(f"--iterations needs one count per scale ({len(self.scales)}), "
                             f"got {self.iterations}")
        if any(int(i) < 0 or int(i) > 100_000 for i in self.iterations) or sum(self.iterations) < 1:
            raise ValueError(f"--iterations must be 0–100000 per scale, not all 0: {self.iterations}")
        for name in ("content_weight", "style_weight", "tv_weight"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"--{name.replace('_', '-')} must be a number ≥ 0, got {v}")
        if not (0 < self.lr < 1e4):
            raise ValueError(f"--lr must be > 0, got {self.lr}")
        if not self.style_scales or any(int(s) < 1 or int(s) > 8 for s in self.style_scales):
            raise ValueError(f"--style-scales must be factors 1–8, got {self.style_scales}")


@dataclass
class OptimizeResult:
    """The image (1×3×H×W, 0–255), how far it got, and its last loss terms."""

    image: Tensor
    iterations: int
    total_iterations: int
    stopped: bool
    seconds: float
    losses: dict[str, float]


def _resize(x: Tensor, size: tuple[int, int]) -> Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    mode = "area" if size[0] < x.shape[-2] else "bicubic"
    kw = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(x, size=size, mode=mode, **kw).clamp(0, 255)


def _fit_longest(hw: Sequence[int], longest: int) -> tuple[int, int]:
    h, w = hw
    s = longest / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


class _Objective:
    """The loss of one scale: targets computed once, ``__call__(x)`` → (loss, terms)."""

    def __init__(self, encoder: nn.Module, photo: Tensor, styles: Sequence[Tensor],
                 weights: Sequence[float], cfg: OptimizeConfig, style_layers: list[str],
                 content_layer: str) -> None:
        self.encoder, self.cfg = encoder, cfg
        self.style_layers, self.content_layer = style_layers, content_layer
        self.scales = [f for f in cfg.style_scales if min(photo.shape[-2:]) // f >= 16] or [1]
        with torch.no_grad():
            self.content = encoder(photo, [content_layer])[content_layer]
            self.content_norm = self.content.pow(2).sum().clamp_min(1e-8)
            self.grams: list[list[Tensor]] = []
            for f in self.scales:
                per_layer = [torch.zeros(()) for _ in style_layers]
                for s, w in zip(styles, weights):
                    feats = encoder(downsample(s, f), style_layers)
                    for i, name in enumerate(style_layers):
                        per_layer[i] = per_layer[i] + w * gram_matrix(feats[name])
                self.grams.append(per_layer)
        self.gram_norms = [[g.pow(2).sum().clamp_min(1e-12) for g in gs] for gs in self.grams]

    def __call__(self, x: Tensor) -> tuple[Tensor, dict[str, float]]:
        taps = sorted(set(self.style_layers) | {self.content_layer},
                      key=lambda t: (int(t[4]), int(t[6:])))
        feats = self.encoder(x, taps)
        content = (feats[self.content_layer] - self.content).pow(2).sum() / self.content_norm
        style = x.new_zeros(())
        for j, f in enumerate(self.scales):
            fs = feats if f == 1 else self.encoder(downsample(x, f), self.style_layers)
            for i, name in enumerate(self.style_layers):
                style = style + (gram_matrix(fs[name]) - self.grams[j][i]).pow(2).sum() / self.gram_norms[j][i]
        style = style / len(self.scales)
        tv = ((x[..., 1:, :] - x[..., :-1, :]).abs().mean()
              + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()) / 255.0
        loss = self.cfg.content_weight * content + self.cfg.style_weight * style + self.cfg.tv_weight * tv
        return loss, {"content": content.item(), "style": style.item(), "tv": tv.item()}


def pick_layers(encoder: nn.Module, content_layer: str | None) -> tuple[list[str], str]:
    """(style taps, content tap) of ``encoder``: its spec's style layers; content ``relu3_1``
    where present (the deepest tap of the shared encoder), else the spec's content layer."""
    spec = getattr(encoder, "spec", None)
    taps = list(getattr(encoder, "taps", []))
    style = list(spec.style_layers) if spec else taps
    if content_layer is None:
        content_layer = "relu3_1" if "relu3_1" in taps else (spec.content_layer if spec else taps[-1])
    if content_layer not in taps:
        raise ValueError(f"content layer {content_layer!r} is not a tap of this loss network "
                         f"({', '.join(taps)})")
    return style, content_layer


def optimize(photo: Tensor, styles: Sequence[Tensor], encoder: nn.Module,
             cfg: OptimizeConfig | None = None, weights: Sequence[float] | None = None,
             progress: Callable[[int, int, dict[str, float]], None] | None = None,
             should_stop: Callable[[], bool] | None = None,
             init: Tensor | None = None) -> OptimizeResult:
    """Optimise an image that has ``photo``'s content and the style of ``styles`` (1×3×H×W,
    0–255 each; several are blended by ``weights`` through their Gram matrices).

    ``init`` (1×3×h×w, 0–255): the image the first stage starts from instead of the photo, e.g.
    a one-pass WCT result that a few iterations refine (``stylize.arbitrary``'s ``refine``).

    ``progress(done, total, terms)`` after every iteration; ``should_stop()`` (checked every
    iteration) ends early with the current image (``stopped=True``). Deterministic for a seed."""
    cfg = cfg or OptimizeConfig()
    cfg.validate()
    if not styles:
        raise ValueError("no style image given")
    weights = [1.0] * len(styles) if weights is None else [float(w) for w in weights]
    if len(weights) != len(styles) or min(weights) < 0 or sum(weights) <= 0:
        raise ValueError(f"style weights must be ≥ 0, one per style, not all 0: {weights}")
    weights = [w / sum(weights) for w in weights]
    torch.manual_seed(cfg.seed)
    start = time.perf_counter()
    style_layers, content_layer = pick_layers(encoder, cfg.content_layer)
    photo = photo.float()
    full = _fit_longest(photo.shape[-2:], cfg.size) if cfg.size else tuple(photo.shape[-2:])
    style_long = cfg.style_size or max(full)
    total = sum(int(i) for i in cfg.iterations)
    done, stopped, terms = 0, False, {}
    x: Tensor | None = None
    for f, iters in zip(cfg.scales, cfg.iterations):
        size = (max(16, round(full[0] / f)), max(16, round(full[1] / f)))
        target = _resize(photo, size)
        painted = [_resize(s.float(), _fit_longest(s.shape[-2:], max(16, round(style_long / f))))
                   for s in styles]
        objective = _Objective(encoder, target, painted, weights, cfg, style_layers, content_layer)
        # optimise u = x / 255: unit-scale pixels keep L-BFGS's first step and curvature sane
        start_from = x if x is not None else (init.float() if init is not None else None)
        u = ((target.clone() if start_from is None else _resize(start_from, size)) / 255.0
             ).requires_grad_(True)
        if cfg.optimizer == "lbfgs":
            # tolerances off: the iteration budget, not a gradient threshold, ends a stage
            opt: torch.optim.Optimizer = torch.optim.LBFGS(
                [u], lr=1.0, max_iter=_CHUNK, max_eval=_CHUNK * 2, history_size=50,
                tolerance_grad=-1.0, tolerance_change=-1.0, line_search_fn="strong_wolfe")
        else:
            opt = torch.optim.Adam([u], lr=cfg.lr / 255.0)

        def closure() -> Tensor:
            nonlocal terms
            opt.zero_grad(set_to_none=True)
            loss, terms = objective(u * 255.0)
            loss.backward()
            return loss

        left = int(iters)
        while left > 0:
            if should_stop is not None and should_stop():
                stopped = True
                break
            n = min(left, _CHUNK) if cfg.optimizer == "lbfgs" else 1
            if cfg.optimizer == "lbfgs":
                opt.param_groups[0]["max_iter"] = n
                opt.param_groups[0]["max_eval"] = n * 2
            opt.step(closure)
            with torch.no_grad():
                u.clamp_(0, 1)
            left -= n
            done += n
            if progress is not None:
                progress(done, total, dict(terms))
        x = u.detach() * 255.0
        if stopped:
            break
    assert x is not None
    if tuple(x.shape[-2:]) != full:
        x = _resize(x, full)
    return OptimizeResult(x, done, total, stopped, time.perf_counter() - start, dict(terms))
