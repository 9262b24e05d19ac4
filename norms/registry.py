"""One name → class map for every normalization layer (as timm's ``create_norm``).

Models resolve a name once in their constructor with ``get_norm_layer`` and hand the resulting
callable to their blocks, which call it with ``num_channels`` (torchvision's ``norm_layer``).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from torch import nn

from .conditional import (
    ConditionalBatchInstanceNorm2d,
    ConditionalBatchNorm2d,
    ConditionalBNIN2d,
    ConditionalGroupNorm2d,
    ConditionalIBN,
    ConditionalInstanceNorm2d,
    ConditionalLayerNorm2d,
    ConditionalNorm,
    ConditionalSwitchableNorm2d,
)
from .catalog import CONDITIONAL_NORM_NAMES, NORM_DESCRIPTIONS, NORM_NAMES
from .layers import (
    IBN,
    BatchInstanceNorm2d,
    BatchNorm2d,
    BNIN2d,
    GroupNorm2d,
    InstanceNorm2d,
    LayerNorm2d,
    SwitchableNorm2d,
)

NormFactory = Callable[..., nn.Module]

NORM_REGISTRY: dict[str, type[nn.Module]] = {
    "bn": BatchNorm2d,
    "in": InstanceNorm2d,
    "bn_in": BNIN2d,
    "bin": BatchInstanceNorm2d,
    "ibn": IBN,
    "gn": GroupNorm2d,
    "ln": LayerNorm2d,
    "sn": SwitchableNorm2d,
}

if tuple(NORM_REGISTRY) != NORM_NAMES:  # catalog.py is the torch-free copy of these names
    raise ImportError("norms.catalog.NORM_NAMES and NORM_REGISTRY disagree")

# Conditional variants (one γ, β — and BIN's ρ — per style; see conditional.py): "c" + name.
# Kept apart from NORM_REGISTRY so that lists of plain norms (CLI choices, benches) stay as they
# are; ``get_norm_layer`` resolves both.
CONDITIONAL_REGISTRY: dict[str, type[ConditionalNorm]] = {
    "cbn": ConditionalBatchNorm2d,
    "cin": ConditionalInstanceNorm2d,
    "cbn_in": ConditionalBNIN2d,
    "cbin": ConditionalBatchInstanceNorm2d,
    "cibn": ConditionalIBN,
    "cgn": ConditionalGroupNorm2d,
    "cln": ConditionalLayerNorm2d,
    "csn": ConditionalSwitchableNorm2d,
}

if tuple(CONDITIONAL_REGISTRY) != CONDITIONAL_NORM_NAMES:
    raise ImportError("norms.catalog.CONDITIONAL_NORM_NAMES and CONDITIONAL_REGISTRY disagree")



def get_norm_layer(name_or_callable: str | NormFactory, **kwargs: Any) -> NormFactory:
    """Resolve a norm name (or pass a callable through) to a factory ``f(num_channels)``.

    Extra keyword arguments are bound with ``functools.partial``. Conditional norms are named
    "c" + a plain name: ``get_norm_layer("cbin", num_styles=4)``. Unknown names raise a
    ``ValueError`` that lists the registered names.
    """
    if callable(name_or_callable) and not isinstance(name_or_callable, str):
        layer = name_or_callable
    elif isinstance(name_or_callable, str):
        key = name_or_callable.strip().lower().replace("-", "_").replace("+", "_")
        if key not in NORM_REGISTRY and key not in CONDITIONAL_REGISTRY:
            raise ValueError(
                f"unknown norm {name_or_callable!r}; known norms: {', '.join(NORM_NAMES)}; "
                f"conditional (one γ, β per style): {', '.join(CONDITIONAL_NORM_NAMES)}"
            )
        layer = NORM_REGISTRY.get(key) or CONDITIONAL_REGISTRY[key]
    else:
        raise ValueError(f"norm must be a name or a callable, got {type(name_or_callable).__name__}; "
                         f"known norms: {', '.join(NORM_NAMES)}")
    return functools.partial(layer, **kwargs) if kwargs else layer


def create_norm(name: str | NormFactory, num_channels: int, **kwargs: Any) -> nn.Module:
    """Build one normalization layer: ``create_norm("bin", 64)``."""
    return get_norm_layer(name, **kwargs)(num_channels)


def conditional_norm(name: str, num_styles: int, **kwargs: Any) -> NormFactory:
    """Factory ``f(num_channels)`` of the conditional variant of norm ``name`` ("bin" or "cbin")
    with ``num_styles`` rows of γ, β (ρ)."""
    key = name.strip().lower().replace("-", "_").replace("+", "_")
    if key in NORM_REGISTRY:
        key = "c" + key
    return get_norm_layer(key, num_styles=num_styles, **kwargs)
