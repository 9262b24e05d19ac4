"""experiments/: the layer that composes stylize and classify."""
from __future__ import annotations

from PIL import Image

import classify.shift
import experiments.style_shift as style_shift


def test_style_shift_renders_through_stylize_at_128px(monkeypatch):
    calls = {}
    monkeypatch.setattr(style_shift.stylize, "load_model",
                        lambda spec, device="cpu": calls.setdefault("model", spec))
    monkeypatch.setattr(style_shift.stylize, "stylize_image",
                        lambda m, image, **kw: (calls.setdefault("size", image.size),
                                                image.transpose(Image.FLIP_LEFT_RIGHT))[1])
    im = Image.new("RGB", (32, 32), (200, 10, 10))
    out = classify.shift.apply_shift(im, "style:candy_in", 0.5)
    assert calls == {"model": "candy_in", "size": (128, 128)} and out.size == (32, 32)


def test_style_shift_without_experiments_is_a_clear_error(monkeypatch):
    import pytest

    monkeypatch.setattr(classify.shift, "_STYLE_RENDERER", None)
    with pytest.raises(ValueError, match="experiments"):
        classify.shift.apply_shift(Image.new("RGB", (8, 8)), "style:candy_bin", 1.0)
