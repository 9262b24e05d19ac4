"""One name → layer factory route for every normalization layer (as timm's ``create_norm``),
conditional (multi-style) layers included.

Models resolve a name once in their constructor with ``get_norm_layer`` and hand the resulting
callable to their blocks, which call it with ``num_channels`` (torchvision's ``norm_layer``).
What each name means lives in ``catalog.py``.
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from torch import nn

from .catalog import NORM_NAMES, resolve
from .conditional import ConditionalNorm

NormFactory = Callable[..., nn.Module]


def _conditional_of(layer: NormFactory, num_styles: int, num_channels: int) -> ConditionalNorm:
    return ConditionalNorm(num_channels, num_styles, layer=layer(num_channels))


def get_norm_layer(name_or_callable: str | NormFactory, num_styles: int | None = None,
                   **kwargs: Any) -> NormFactory:
    """Resolve a norm name (or pass a callable through) to a factory ``f(num_channels)``.

    ``num_styles=S`` gives the norm's conditional variant with S rows of γ, β (ρ) — one per
    style — so ``get_norm_layer("bin", num_styles=4)``; a conditional name from a model file
    ("cbin") means the same (one style unless ``num_styles`` says otherwise). A callable with
    ``num_styles`` is wrapped in ``ConditionalNorm``. Extra keyword arguments go to the layer.
    Unknown names raise a ``ValueError`` that lists the known names.
    """
    if isinstance(name_or_callable, str):
        spec, conditional = resolve(name_or_callable)
        if conditional or num_styles is not None:
            if spec.conditional is None:
                raise ValueError(f"norm {spec.name!r} has no conditional (multi-style) variant")
            return functools.partial(spec.conditional, num_styles=1 if num_styles is None
                                     else num_styles, **kwargs)
        layer = spec.layer
    elif callable(name_or_callable):
        layer = name_or_callable
        if num_styles is not None:
            factory = functools.partial(layer, **kwargs) if kwargs else layer
            return functools.partial(_conditional_of, factory, num_styles)
    else:
        raise ValueError(f"norm must be a name or a callable, got "
                         f"{type(name_or_callable).__name__}; known norms: {', '.join(NORM_NAMES)}")
    return functools.partial(layer, **kwargs) if kwargs else layer


def create_norm(name: str | NormFactory, num_channels: int, num_styles: int | None = None,
                **kwargs: Any) -> nn.Module:
    """Build one normalization layer: ``create_norm("bin", 64)``,
    ``create_norm("bin", 64, num_styles=4)``."""
    return get_norm_layer(name, num_styles=num_styles, **kwargs)(num_channels)
