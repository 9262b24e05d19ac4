"""``stylize score`` methods for the per-painting paths: ``wct``, ``adain`` (one forward pass,
``stylize.arbitrary``; ``wct:refine=30;alpha=0.8`` sets what ``stylize run --style-image`` sets) and ``optimize`` (Gatys et al., ``stylize.optimize``). Registered when
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


ARBITRARY_OPTIONS = {"alpha": float, "refine": int}


def parse_options(method: str, arg: str | None) -> dict[str, Any]:
    """``KEY=VALUE;...`` after a per-painting method's name (``wct:refine=30;alpha=0.8``):
    the same settings as ``stylize run --style-image``; one-line error for anything else."""
    out: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in (arg or "").split(";"))):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ARBITRARY_OPTIONS:
            raise ValueError(f"method {method}:{arg}: options are KEY=VALUE;... with KEY in "
                             f"{', '.join(ARBITRARY_OPTIONS)}, got {part!r}")
        try:
            out[key] = ARBITRARY_OPTIONS[key](value.strip())
        except ValueError:
            raise ValueError(f"method {method}:{arg}: {key} must be a number, got "
                             f"{value.strip()!r}") from None
    return out


def _arbitrary_factory(method: str):
    def factory(style_image_path: str, *, device: str = "cpu", vgg_weights: str | None = None,
                alpha: float = 1.0, scales: Any = (1,), arg: str | None = None, **_: Any):
        # scales: what `stylize run --style-image` and the UI use by default (one pass); the
        # coarse-to-fine (2, 1) turns a blown-out flat region of the coarse pass (a bright
        # forehead) into a flat grey patch at the fine pass
        from engine.images import to_image, to_tensor

        from .arbitrary import parse_scales, stylize_with_paintings

        opts = {"alpha": alpha, "refine": 0, **parse_options(method, arg)}
        st = _stylizer(str(device), vgg_weights)
        paintings = {str(style_image_path): 1.0}
        factors = parse_scales(scales)

        def run(x: Tensor) -> Tensor:
            out = stylize_with_paintings(st, to_image(x), paintings, method=method,
                                         alpha=opts["alpha"], scales=factors, max_size=None,
                                         refine=opts["refine"])
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
