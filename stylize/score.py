"""Measure what the eye sees: style strength, content drift and time of any stylization method
on held-out photos, with a contact sheet (issue 31, item 4).

Per (method, style, photo), with φ_l the shared loss network's features and G_l their Gram
matrices (Gatys et al. 2016, eq. 3; normalised by C·H·W as in training, ``losses.gram_matrix``):

* style strength  S = 1 − L_style(output) / L_style(photo),
  L_style(y) = Σ_l mean((G_l(y) − G_l(style))²) over l ∈ relu1_1, relu2_1, relu3_1 — the style
  loss ``PerceptualLoss`` trains with, at scale 1. S = 0: no closer to the style than the photo;
  S = 1: the style image's Gram statistics exactly.
* content drift   C = ‖φ_relu3_1(output) − φ_relu3_1(photo)‖² / ‖φ_relu3_1(photo)‖²
  (0: the photo's features; 1: a change as large as the features themselves).
* seconds per image: the wall time of the method's call (the factory's set-up, e.g. loading a
  model or exporting it to ONNX, is not counted).

Sizes are fixed so that numbers compare across methods and runs: each photo is resized to a
short side of ``SCORE_SIZE`` (384 px, bicubic; aspect kept), the style image to a short side of
``STYLE_SIZE`` (384 px, the size the shipped models were trained against). Methods are
pluggable (``register_method``); ``photo`` (the identity: S = C = 0) and ``model:NAME`` (a
feed-forward model, shipped name or file) are built in.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from engine.images import load_image, to_image, to_tensor

from .losses import gram_matrix, load_vgg_encoder
from .photos import content_split

SCORE_SIZE = 384  # short side of every scored photo (px)
STYLE_SIZE = 384  # short side of the style image the Gram targets come from (px)
STYLE_TAPS = ("relu1_1", "relu2_1", "relu3_1")
CONTENT_TAP = "relu3_1"
SPLITS = ("heldout", "train", "all")

Method = Callable[[Tensor], Tensor]  # 1×3×H×W float 0–255 -> 1×3×H×W float 0–255
MethodFactory = Callable[..., Method]


class MethodUnavailable(ValueError):
    """A method cannot produce a given style (e.g. a model that was not trained on it): the
    cell is skipped and reported, the rest of the score goes on."""


_METHODS: dict[str, MethodFactory] = {}
# Modules that register methods when imported (e.g. "stylize.optimize" for ``optimize``); they are
# imported the first time a method is looked up, so ``score`` and the CLI see their methods
# without importing them eagerly. A module that does not exist (yet) is skipped.
METHOD_MODULES: list[str] = ["stylize.methods"]
_imported: set[str] = set()


def _import_method_modules() -> None:
    import importlib

    for mod in METHOD_MODULES:
        if mod in _imported:
            continue
        _imported.add(mod)
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as exc:
            if exc.name != mod:  # a missing dependency of an existing module is a real error
                raise


def register_method(name: str, factory: MethodFactory, *, replace: bool = False) -> None:
    """Make ``name`` (and ``name:ARG``) a method of ``score``.

    ``factory(style_image_path: str, **opts)`` returns a callable photo → output (both
    1×3×H×W float 0–255 on ``opts["device"]``; an output of another size is resized to the
    photo's). ``opts`` holds ``arg`` (the text after ``name:``, or None), ``device`` and the
    user's options for this method; factories ignore what they do not know. A factory raises
    ``MethodUnavailable`` for a style it cannot do, ``ValueError`` for bad options."""
    if not name or ":" in name or "," in name:
        raise ValueError(f"method names are non-empty without ':' or ',', got {name!r}")
    if name in _METHODS and not replace:
        raise ValueError(f"method {name!r} is already registered (pass replace=True)")
    _METHODS[name] = factory


def method_names() -> list[str]:
    """The registered method names (a spec is NAME or NAME:ARG)."""
    _import_method_modules()
    return sorted(_METHODS)


def parse_method(spec: str) -> tuple[str, str | None]:
    """(name, arg) of a method spec "NAME" or "NAME:ARG"; one-line error for unknown names."""
    name, sep, arg = spec.strip().partition(":")
    _import_method_modules()
    if name not in _METHODS:
        raise ValueError(f"unknown method {spec!r}; known: "
                         f"{', '.join(n + (':NAME' if n == 'model' else '') for n in method_names())}")
    if sep and not arg.strip():
        raise ValueError(f"method {spec!r} names nothing after ':'")
    return name, (arg.strip() if sep else None)


def make_method(spec: str, style_image: str | Path, **opts: Any) -> Method:
    """The callable of method ``spec`` for ``style_image`` (see ``register_method``)."""
    name, arg = parse_method(spec)
    return _METHODS[name](str(style_image), arg=arg, **opts)


# ------------------------------------------------------------------------------ built-in methods

def _photo_factory(style_image_path: str, **_: Any) -> Method:
    """The identity: the photo itself (S = 0, C = 0), the floor every method should beat."""
    return lambda x: x.clone()


def _model_factory(style_image_path: str, *, arg: str | None = None, device: str = "cpu",
                   style_map: dict[str, str] | None = None, backend: str = "auto",
                   **_: Any) -> Method:
    """A feed-forward model (``model:NAME``: shipped name or file), run as ``stylize run`` runs
    it. Its style is the one named like the style image's file stem (``style_map`` maps a stem
    to a model style); ``MethodUnavailable`` when the model has no such style."""
    from .infer import load_model, stylize_image
    from .model import style_names

    if not arg:
        raise ValueError("method 'model' needs a model: model:NAME (a shipped name or a file)")
    m = load_model(arg, device=device)
    names = style_names(m.meta, m.config.num_styles)
    stem = Path(style_image_path).stem
    wanted = (style_map or {}).get(stem, stem)
    lookup = {n.lower(): n for n in names}
    if wanted.lower() not in lookup:
        raise MethodUnavailable(f"{m.name} has no style {wanted!r} (its styles: "
                                f"{', '.join(names)})")
    style = lookup[wanted.lower()] if m.config.num_styles > 1 else None

    def run(x: Tensor) -> Tensor:
        out = stylize_image(m, to_image(x), style=style, device=device, bar=False,
                            backend=backend)
        return to_tensor(out).to(x.device)

    run(torch.full((1, 3, 64, 64), 128.0))  # warm-up: an ONNX export or first-call cost is set-up
    return run


register_method("photo", _photo_factory)
register_method("model", _model_factory)


# ------------------------------------------------------------------------------ measuring

def resize_short(img: Image.Image, size: int) -> Image.Image:
    """``img`` resized (bicubic) so that its shorter side is ``size``, aspect kept."""
    w, h = img.size
    s = size / min(w, h)
    new = (max(1, round(w * s)), max(1, round(h * s)))
    return img if new == img.size else img.resize(new, Image.BICUBIC)


def load_photo(path: str | Path, size: int = SCORE_SIZE) -> Tensor:
    """1×3×H×W float (0–255) of a photo, shorter side ``size``."""
    return to_tensor(resize_short(load_image(path).convert("RGB"), size))


def style_loss(grams: dict[str, Tensor], target: dict[str, Tensor]) -> float:
    """Σ_l mean((G_l − G_l(style))²) over ``STYLE_TAPS`` (``PerceptualLoss``'s style term)."""
    return float(sum(F.mse_loss(grams[t], target[t]) for t in STYLE_TAPS))


class Meter:
    """The loss network's view of an image: Gram matrices at ``STYLE_TAPS`` and relu3_1
    features; S and C of an output against its photo and a style."""

    def __init__(self, encoder: torch.nn.Module, device: torch.device) -> None:
        names = getattr(encoder, "names", None)
        if names is not None and not set(STYLE_TAPS) <= set(names):
            raise ValueError(f"the loss network covers {[n for n in names if n != 'pool']}; "
                             f"scoring needs {', '.join(STYLE_TAPS)}")
        self.encoder = encoder.to(device).eval()
        self.device = device

    @torch.inference_mode()
    def features(self, x: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        """({tap: 1×C×C Gram}, 1×256×h×w relu3_1 features) of ``x`` (1×3×H×W, 0–255)."""
        feats = self.encoder(x.to(self.device).float(), list(STYLE_TAPS))
        return {t: gram_matrix(feats[t]) for t in STYLE_TAPS}, feats[CONTENT_TAP].float()

    def style_target(self, path: str | Path, size: int = STYLE_SIZE) -> dict[str, Tensor]:
        """The Gram targets of a style image at a short side of ``size``."""
        return self.features(load_photo(path, size))[0]


@dataclass
class ScoreResult:
    """What ``score`` measured: one row per cell, means per (method, style) and per method,
    skipped (method, style) pairs with the reason, the settings, and the contact-sheet images."""

    cells: list[dict[str, Any]] = field(default_factory=list)
    summary: list[dict[str, Any]] = field(default_factory=list)
    methods: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    # sheet[(photo index, method, style)] = output (PIL); sheet_photos[i] = the photo (PIL)
    sheet: dict[tuple[int, str, str], Image.Image] = field(default_factory=dict, repr=False)
    sheet_photos: list[Image.Image] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready part (no images)."""
        return {"settings": self.settings, "summary": self.summary, "methods": self.methods,
                "skipped": self.skipped, "cells": self.cells}


def select_photos(folder: str | Path, split: str = "heldout", limit: int | None = None
                  ) -> list[Path]:
    """The photos of ``folder``'s ``split`` ("heldout", "train" or "all"; see
    ``stylize.photos``), sorted, the first ``limit`` of them when given."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    parts = content_split(folder)
    files = sorted(parts["train"] + parts["heldout"]) if split == "all" else parts[split]
    if not files:
        raise ValueError(f"the {split} part of {folder} holds no photos")
    return files[:limit] if limit else files


def _mean(xs: Sequence[float]) -> float:
    return sum(xs) / len(xs) if xs else float("nan")


def _sd(xs: Sequence[float]) -> float:
    if len(xs) < 2:
        return 0.0
    m = _mean(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def score(methods: Sequence[str], styles: Sequence[str | Path], photos: Sequence[str | Path], *,
          size: int = SCORE_SIZE, style_size: int = STYLE_SIZE, encoder: torch.nn.Module | None = None,
          vgg_weights: str | Path | None = None, device: str = "cpu",
          method_opts: dict[str, dict[str, Any]] | None = None, sheet_photos: int = 4,
          bar: bool = True, progress: Callable[[int, int], None] | None = None) -> ScoreResult:
    """Score every (method, style) on every photo; see the module docstring for S and C.

    ``methods``: specs ("photo", "model:four_styles_bin", ...); ``method_opts[spec]``: options
    for that method's factory. ``encoder`` (a loaded loss network) or ``vgg_weights`` (its file;
    it must reach relu3_1). The first ``sheet_photos`` photos' outputs are kept for
    ``contact_sheet``. A (method, style) whose factory raises ``MethodUnavailable`` is skipped
    and listed; any other error stops the run. ``progress(done, total)`` is called per cell."""
    from tqdm.auto import tqdm

    from engine.devices import resolve_device

    if not methods:
        raise ValueError("no method given")
    if not styles:
        raise ValueError("no style image given")
    if not photos:
        raise ValueError("no photo given")
    if not 64 <= size <= 4096:
        raise ValueError(f"size must be between 64 and 4096 px, got {size}")
    if not 64 <= style_size <= 4096:
        raise ValueError(f"style size must be between 64 and 4096 px, got {style_size}")
    if len(set(methods)) != len(methods):
        raise ValueError("a method is named twice")
    for spec in methods:
        parse_method(spec)  # unknown names fail before any work
    stems = [Path(s).stem for s in styles]
    if len(set(stems)) != len(stems):
        raise ValueError("two style images have the same file name; styles are named after "
                         "their files")
    for s in styles:
        if not Path(s).is_file():
            raise ValueError(f"style image {s} does not exist")
    dev = resolve_device(device)
    if encoder is None:
        encoder = load_vgg_encoder(vgg_weights)
    meter = Meter(encoder, dev)
    targets = {stem: meter.style_target(s, style_size) for stem, s in zip(stems, styles)}
    opts = method_opts or {}
    result = ScoreResult(settings={
        "size": size, "style_size": style_size, "style_taps": list(STYLE_TAPS),
        "content_tap": CONTENT_TAP, "encoder": getattr(encoder, "kind", type(encoder).__name__),
        "device": str(dev), "threads": torch.get_num_threads(), "methods": list(methods),
        "styles": [str(s) for s in styles], "photos": [str(p) for p in photos]})
    made: dict[tuple[str, str], Method | None] = {}
    total = len(photos) * len(methods) * len(styles)
    done = 0
    with tqdm(total=total, desc="score", unit="cell", disable=not bar) as pbar:
        for i, photo_path in enumerate(photos):
            x = load_photo(photo_path, size).to(dev)
            grams_x, phi_x = meter.features(x)
            keep = i < sheet_photos
            if keep:
                result.sheet_photos.append(to_image(x))
            for spec in methods:
                for stem, style_path in zip(stems, styles):
                    pbar.set_postfix_str(f"{spec} · {stem}", refresh=False)
                    if (spec, stem) not in made:
                        try:
                            made[(spec, stem)] = make_method(spec, style_path, device=str(dev),
                                                             **opts.get(spec, {}))
                        except MethodUnavailable as exc:
                            made[(spec, stem)] = None
                            result.skipped.append({"method": spec, "style": stem,
                                                   "reason": str(exc)})
                    fn = made[(spec, stem)]
                    if fn is not None:
                        _sync(dev)
                        t0 = time.perf_counter()
                        y = fn(x)
                        _sync(dev)
                        seconds = time.perf_counter() - t0
                        if tuple(y.shape) != tuple(x.shape):
                            if y.ndim != 4 or y.shape[:2] != x.shape[:2]:
                                raise ValueError(f"method {spec} returned a tensor of shape "
                                                 f"{tuple(y.shape)} for a 1×3×H×W photo")
                            y = F.interpolate(y.float(), size=x.shape[-2:], mode="bicubic",
                                              align_corners=False)
                        y = y.float().clamp(0, 255)  # what an image file can hold
                        # an unchanged photo has the photo's features (exactly: S = C = 0)
                        grams_y, phi_y = ((grams_x, phi_x) if torch.equal(y, x.float())
                                          else meter.features(y))
                        l_photo = style_loss(grams_x, targets[stem])
                        l_out = style_loss(grams_y, targets[stem])
                        drift = float((phi_y - phi_x).pow(2).sum() / phi_x.pow(2).sum().clamp_min(1e-12))
                        result.cells.append({
                            "method": spec, "style": stem, "photo": Path(photo_path).name, "photo_index": i,
                            "S": 1.0 - l_out / max(l_photo, 1e-12), "C": drift,
                            "seconds": seconds, "style_loss_output": l_out,
                            "style_loss_photo": l_photo, "height": int(x.shape[-2]),
                            "width": int(x.shape[-1])})
                        if keep:
                            result.sheet[(i, spec, stem)] = to_image(y)
                    done += 1
                    pbar.update(1)
                    if progress is not None:
                        progress(done, total)
    if not result.cells:
        raise ValueError("no method could produce any of the styles: "
                         + "; ".join(s["reason"] for s in result.skipped[:3]))
    _summarise(result, methods, stems)
    return result


def _summarise(result: ScoreResult, methods: Sequence[str], stems: Sequence[str]) -> None:
    for spec in methods:
        rows = []
        for stem in stems:
            cells = [c for c in result.cells if c["method"] == spec and c["style"] == stem]
            if not cells:
                continue
            S, C, T = ([c[k] for c in cells] for k in ("S", "C", "seconds"))
            row = {"method": spec, "style": stem, "n": len(cells), "S": _mean(S), "S_sd": _sd(S),
                   "C": _mean(C), "C_sd": _sd(C), "seconds": _mean(T)}
            rows.append(row)
            result.summary.append(row)
        if rows:  # every style weighs the same, whatever its photo count
            result.methods.append({"method": spec, "styles": len(rows),
                                   "S": _mean([r["S"] for r in rows]),
                                   "S_min": min(r["S"] for r in rows),
                                   "C": _mean([r["C"] for r in rows]),
                                   "seconds": _mean([r["seconds"] for r in rows])})


def markdown(result: ScoreResult) -> str:
    """The per-(method, style) means as a Markdown table, then the per-method means."""
    lines = ["| method | style | photos | S (sd) | C (sd) | s / image |", "|---|---|---:|---:|---:|---:|"]
    for r in result.summary:
        lines.append(f"| {r['method']} | {r['style']} | {r['n']} | {r['S']:.3f} ({r['S_sd']:.3f}) "
                     f"| {r['C']:.3f} ({r['C_sd']:.3f}) | {r['seconds']:.2f} |")
    lines += ["", "| method | styles | mean S | min S | mean C | s / image |",
              "|---|---:|---:|---:|---:|---:|"]
    for r in result.methods:
        lines.append(f"| {r['method']} | {r['styles']} | {r['S']:.3f} | {r['S_min']:.3f} | "
                     f"{r['C']:.3f} | {r['seconds']:.2f} |")
    if result.skipped:
        lines.append("")
    for s in result.skipped:
        lines.append(f"skipped {s['method']} × {s['style']}: {s['reason']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------ contact sheet

def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def _fit(img: Image.Image, cell: int) -> Image.Image:
    """``img`` centre-cropped to a square of its shorter side, then scaled to ``cell`` px (not
    scaled at all when ``cell`` is the scoring size: the sheet shows the pixels scored)."""
    w, h = img.size
    s = min(w, h)
    img = img.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return img if s == cell else img.resize((cell, cell), Image.LANCZOS)


def contact_sheet(result: ScoreResult, styles: Sequence[str | Path] | None = None,
                  cell: int | None = None) -> Image.Image:
    """Photos (rows) × (style, method) (columns), the photo first (so the identity method
    ``photo`` gets no column of its own); under each output its S, C
    and seconds. ``styles`` (the style image files, in ``result``'s order) adds a header row of
    the paintings. Cells are square centre crops at ``cell`` px (default: the scoring size, so
    100 % zoom shows the scored pixels)."""
    if not result.sheet_photos:
        raise ValueError("the score kept no images for a contact sheet (sheet_photos = 0)")
    cell = cell or int(result.settings.get("size", SCORE_SIZE))
    stems = [Path(s).stem for s in result.settings["styles"]]
    methods = list(result.settings["methods"])
    cols = [(m, s) for s in stems for m in methods  # the photo column already shows "photo"
            if m != "photo" and any(k[1] == m and k[2] == s for k in result.sheet)]
    by_key = {(c["photo_index"], c["method"], c["style"]): c for c in result.cells}
    names = [Path(p).name for p in result.settings["photos"]]
    pad, label = 6, 34
    font, small = _font(14), _font(12)
    header = cell + label if styles else label
    width = pad + (1 + len(cols)) * (cell + pad)
    height = pad + header + len(result.sheet_photos) * (cell + label + pad)
    sheet = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(sheet)
    for j, (m, s) in enumerate(cols, start=1):
        x0 = pad + j * (cell + pad)
        if styles:
            path = dict(zip(stems, styles)).get(s)
            if path is not None:
                sheet.paste(_fit(resize_short(load_image(path).convert("RGB"), cell), cell),
                            (x0, pad))
        draw.text((x0 + 2, pad + header - label + 2), s, fill="black", font=font)
        draw.text((x0 + 2, pad + header - label + 18), m, fill="dimgray", font=small)
    draw.text((pad + 2, pad + header - label + 2), "photo", fill="black", font=font)
    for i, photo in enumerate(result.sheet_photos):
        y0 = pad + header + i * (cell + label + pad)
        sheet.paste(_fit(photo, cell), (pad, y0))
        draw.text((pad + 2, y0 + cell + 3), names[i][:cell // 7], fill="black", font=small)
        for j, (m, s) in enumerate(cols, start=1):
            x0 = pad + j * (cell + pad)
            img = result.sheet.get((i, m, s))
            c = by_key.get((i, m, s))
            if img is None or c is None:
                draw.text((x0 + 4, y0 + cell // 2), "n/a", fill="gray", font=font)
                continue
            sheet.paste(_fit(img, cell), (x0, y0))
            draw.text((x0 + 2, y0 + cell + 3),
                      f"S {c['S']:.2f}  C {c['C']:.2f}  {c['seconds']:.2f} s",
                      fill="black", font=font)
    return sheet
