"""A style-transfer model as an appearance shift for classifiers (IBN-Net, Sec. 4.1: IN helps
under style changes). Composes ``stylize`` and ``classify``, so it lives above both."""
from __future__ import annotations

from PIL import Image

import classify.shift
import stylize


def render_style_shift(image: Image.Image, model: str, strength: float, device: str) -> Image.Image:
    """``image`` rendered by the style model ``model`` at ``strength`` (0–1), same size. Works at
    ≥ 128 px so small (CIFAR) images survive the network's downsampling."""
    m = stylize.load_model(model, device=device)
    im = image.convert("RGB")
    small = min(im.size) < 128
    work = im.resize((im.width * 128 // min(im.size), im.height * 128 // min(im.size)),
                     Image.BICUBIC) if small else im
    out = stylize.stylize_image(m, work, strength=strength, device=device)
    return out.resize(im.size, Image.BICUBIC) if small else out


classify.shift.register_style_renderer(render_style_shift)
