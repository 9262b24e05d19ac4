"""``stylize score`` methods for the per-painting paths: ``wct``, ``adain`` (one forward pass,
``stylize.arbitrary``) and ``optimize`` (Gatys et al., ``stylize.optimize``). Registered when
``stylize.score`` first looks a method up (``score.METHOD_MODULES``)."""
from __future__ import annotations

import functools
from typing import Any

from torch import Tensor

from .score import register_method


@functools.lru_cache(maxsize=2)
def _encoder(device: str, vgg_weights: str | None):
    from .losses import find_encoder

    return find_encoder(vgg_weights).to(device)


@functools.lru_cache(maxsize=2)
def _stylizer(device: str, vgg_weights: str | None):
    from .arbitrary import load_stylizer

    return load_stylizer(_encoder(device, vgg_weights), device=device)


def _arbitrary_factory(method: str):
    def factory(style_image_path: str, *, device: str = "cpu", vgg_weights: str | None = None,
                alpha: float = 1.0, scales: Any = (1,), **_: Any):
        # scales: what `stylize run --style-image` and the UI use by default (one pass); the
        # coarse-to-fine (2, 1) turns a blown-out flat region of the coarse pass (a bright
        # forehead) into a flat grey patch at the fine pass
        from engine.images import to_image, to_tensor

        from .arbitrary import parse_scales, stylize_with_paintings

        st = _stylizer(str(device), vgg_weights)
        paintings = {str(style_image_path): 1.0}
        factors = parse_scales(scales)

        def run(x: Tensor) -> Tensor:
            out = stylize_with_paintings(st, to_image(x), paintings, method=method, alpha=alpha,
                                         scales=factors, max_size=None)
            return to_tensor(out).to(x.device)

        return run

    return factory


def _optimize_factory(style_image_path: str, *, device: str = "cpu", vgg_weights: str | None = None,
                      iterations: Any = None, style_weight: float | None = None, **_: Any):
    from engine.images import load_image, to_tensor

    from .optimize import OptimizeConfig, optimize

    enc = _encoder(str(device), vgg_weights)
    cfg = OptimizeConfig(size=None)
    if iterations is not None:
        cfg.iterations = [int(i) for i in str(iterations).split(",")]
    if style_weight is not None:
        cfg.style_weight = float(style_weight)
    painting = to_tensor(load_image(style_image_path).convert("RGB"))

    def run(x: Tensor) -> Tensor:
        from .optimize import _fit_longest, _resize

        s = _resize(painting, _fit_longest(painting.shape[-2:], max(x.shape[-2:])))
        return optimize(x, [s.to(x.device)], enc, cfg).image

    return run


register_method("wct", _arbitrary_factory("wct"))
register_method("adain", _arbitrary_factory("adain"))
register_method("optimize", _optimize_factory)
