"""One name → class map for every normalization layer (as timm's ``create_norm``).

Models resolve a name once in their constructor with ``get_norm_layer`` and hand the resulting
callable to their blocks, which call it with ``num_channels`` (torchvision's ``norm_layer``).
"""
from __future__ import annotations

import functools
from typing import Any, Callable

from torch import nn

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

NORM_NAMES: tuple[str, ...] = tuple(NORM_REGISTRY)

NORM_DESCRIPTIONS: dict[str, str] = {
    "bn": "Batch Norm: statistics over the batch and space per channel; running averages in eval.",
    "in": "Instance Norm: statistics per image and channel; removes per-image contrast and style.",
    "bn_in": "BN+IN: the average of the batch- and instance-normalised outputs (ρ fixed at 0.5).",
    "bin": "Batch-Instance Norm (Nam & Kim 2018): a learned per-channel gate ρ mixes BN and IN.",
    "ibn": "IBN (Pan et al. 2018): IN on half of the channels, BN on the other half.",
    "gn": "Group Norm (Wu & He 2018): statistics per image over groups of channels.",
    "ln": "Layer Norm: statistics per image over all channels and space.",
    "sn": "Switchable Norm (Luo et al. 2019): learned softmax mix of IN, LN and BN statistics.",
}


def get_norm_layer(name_or_callable: str | NormFactory, **kwargs: Any) -> NormFactory:
    """Resolve a norm name (or pass a callable through) to a factory ``f(num_channels)``.

    Extra keyword arguments are bound with ``functools.partial``. Unknown names raise a
    ``ValueError`` that lists the registered names.
    """
    if callable(name_or_callable) and not isinstance(name_or_callable, str):
        layer = name_or_callable
    elif isinstance(name_or_callable, str):
        key = name_or_callable.strip().lower().replace("-", "_").replace("+", "_")
        if key not in NORM_REGISTRY:
            raise ValueError(
                f"unknown norm {name_or_callable!r}; known norms: {', '.join(NORM_NAMES)}"
            )
        layer = NORM_REGISTRY[key]
    else:
        raise ValueError(f"norm must be a name or a callable, got {type(name_or_callable).__name__}; "
                         f"known norms: {', '.join(NORM_NAMES)}")
    return functools.partial(layer, **kwargs) if kwargs else layer


def create_norm(name: str | NormFactory, num_channels: int, **kwargs: Any) -> nn.Module:
    """Build one normalization layer: ``create_norm("bin", 64)``."""
    return get_norm_layer(name, **kwargs)(num_channels)
