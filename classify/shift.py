"""Appearance shifts of test images (``normlab classify shift``): the IBN-Net Table 1 shifts
(Pan et al. 2018: RGB+50, R+50, contrast std×1.5) and others, each with a strength in natural
units, plus ``style:MODEL`` (the image re-rendered by a ``stylize`` model)."""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Callable

import numpy as np
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class Shift:
    """One appearance shift: ``fn(image, strength)``, its default strength and useful range."""

    name: str
    fn: Callable[[Image.Image, float], Image.Image]
    default: float
    lo: float
    hi: float
    help: str


def _arr(im: Image.Image) -> np.ndarray:
    return np.asarray(im.convert("RGB"), dtype=np.float32)


def _img(a: np.ndarray) -> Image.Image:
    return Image.fromarray(np.clip(np.rint(a), 0, 255).astype(np.uint8), "RGB")


def _rgb_plus(im: Image.Image, s: float) -> Image.Image:
    return _img(_arr(im) + s)


def _red_plus(im: Image.Image, s: float) -> Image.Image:
    a = _arr(im)
    a[..., 0] += s
    return _img(a)


def _contrast(im: Image.Image, s: float) -> Image.Image:
    # IBN-Net "std ×1.5": deviations from each channel's image mean scaled by s
    a = _arr(im)
    m = a.mean(axis=(0, 1), keepdims=True)
    return _img(m + (a - m) * s)


def _brightness(im: Image.Image, s: float) -> Image.Image:
    return _img(_arr(im) * s)


def _gamma(im: Image.Image, s: float) -> Image.Image:
    return _img(255.0 * (_arr(im) / 255.0) ** s)


def _hue(im: Image.Image, s: float) -> Image.Image:
    # rotate colours by s degrees about the gray axis (1,1,1)/√3 (Rodrigues): grays stay put
    t = np.deg2rad(s)
    k = np.full(3, 1 / np.sqrt(3), dtype=np.float64)
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = np.cos(t) * np.eye(3) + np.sin(t) * kx + (1 - np.cos(t)) * np.outer(k, k)
    return _img(_arr(im) @ rot.T.astype(np.float32))


def _grayscale(im: Image.Image, s: float) -> Image.Image:
    a = _arr(im)
    g = (a @ np.array([0.299, 0.587, 0.114], dtype=np.float32))[..., None]  # ITU-R 601 luma
    return _img(a * (1 - s) + g * s)


def _blur(im: Image.Image, s: float) -> Image.Image:
    return im.convert("RGB").filter(ImageFilter.GaussianBlur(radius=s)) if s > 0 else im.convert("RGB")


def _jpeg(im: Image.Image, s: float) -> Image.Image:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="JPEG", quality=int(max(1, min(95, s))))
    buf.seek(0)
    with Image.open(buf) as out:
        return out.convert("RGB")


SHIFTS: dict[str, Shift] = {s.name: s for s in [
    Shift("rgb_plus", _rgb_plus, 50, -100, 100, "add a constant to R, G and B (IBN-Net: RGB+50)"),
    Shift("red_plus", _red_plus, 50, -100, 100, "add a constant to R only (IBN-Net: R+50)"),
    Shift("contrast", _contrast, 1.5, 0.25, 3, "scale deviations from the image mean (IBN-Net: std×1.5)"),
    Shift("brightness", _brightness, 1.5, 0.2, 3, "multiply every value"),
    Shift("gamma", _gamma, 2.0, 0.3, 3, "255·(x/255)^gamma"),
    Shift("hue", _hue, 90, 0, 360, "rotate colours about the gray axis by this many degrees"),
    Shift("grayscale", _grayscale, 1.0, 0, 1, "blend toward the luma image (1: fully gray)"),
    Shift("blur", _blur, 1.0, 0, 5, "Gaussian blur radius in pixels"),
    Shift("jpeg", _jpeg, 10, 1, 95, "re-encode as JPEG at this quality"),
]}


def parse_shift(spec: str) -> tuple[str, float | None]:
    """``NAME`` or ``NAME=STRENGTH`` (``style:MODEL[=STRENGTH]`` too) → (name, strength)."""
    name, sep, val = spec.strip().partition("=")
    try:
        strength = float(val) if sep else None
    except ValueError:
        raise ValueError(f"shift strength must be a number: {spec!r}") from None
    _check(name, strength)
    return name, strength


def _check(name: str, strength: float | None = None) -> None:
    """Unknown names and strengths outside a shift's range (NaN included) are one-line errors."""
    _check_name(name)
    if strength is None:
        return
    lo, hi = (0.0, 1.0) if name.startswith("style:") else (SHIFTS[name].lo, SHIFTS[name].hi)
    if not (isinstance(strength, (int, float)) and lo <= strength <= hi):  # NaN fails both
        label = "style" if name.startswith("style:") else name
        raise ValueError(f"{label} shift strength must be from {lo:g} to {hi:g}, got {strength!r}")


def _check_name(name: str) -> None:
    if name.startswith("style:"):
        if not name[6:]:
            raise ValueError("style shift needs a model: style:MODEL")
        return
    if name not in SHIFTS:
        raise ValueError(f"unknown shift {name!r}; known: {', '.join(SHIFTS)}, style:MODEL")


def apply_shift(image: Image.Image, shift: str, strength: float | None = None,
                device: str = "cpu") -> Image.Image:
    """The shifted image (same size, RGB). ``strength`` None uses the shift's default;
    ``style:MODEL`` renders with a ``stylize`` model at ``strength`` (0–1, default 1), working at
    ≥ 128 px so that small (CIFAR) images survive the network's downsampling."""
    _check(shift, strength)
    if shift.startswith("style:"):
        return _style(image, shift[6:], 1.0 if strength is None else strength, device)
    s = SHIFTS[shift]
    return s.fn(image, s.default if strength is None else float(strength))


# ``style:MODEL`` shifts render with a style-transfer network. classify never imports stylize
# (see ../shared/architecture.md): the layer that composes both (``experiments``) registers the
# renderer here.
_STYLE_RENDERER: Callable[[Image.Image, str, float, str], Image.Image] | None = None


def register_style_renderer(fn: Callable[[Image.Image, str, float, str], Image.Image]) -> None:
    """Install ``fn(image, model, strength, device) -> image`` for ``style:MODEL`` shifts."""
    global _STYLE_RENDERER
    _STYLE_RENDERER = fn


def _style(image: Image.Image, model: str, strength: float, device: str) -> Image.Image:
    if _STYLE_RENDERER is None:
        raise ValueError("style:MODEL shifts need normlab's experiments package "
                         "(import experiments, or use the normlab command line)")
    return _STYLE_RENDERER(image, model, strength, device)
