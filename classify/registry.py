"""Model registry: ``create_model(name, num_classes=..., norm=...)`` over small builder functions.

Every model built here carries a ``ModelConfig`` (``model.config``) that is saved into checkpoints
and rebuilds the same network with ``build_from_config``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

from torch import nn

Builder = Callable[..., nn.Module]

_MODELS: dict[str, Builder] = {}
_DEFAULT_INPUT: dict[str, int] = {}


@dataclass
class ModelConfig:
    """What rebuilds a classifier: registry name, class count, norm name and extra kwargs."""

    arch: str
    num_classes: int = 1000
    norm: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = {k: d[k] for k in ("arch", "num_classes", "norm", "kwargs") if k in d}
        if "arch" not in known:
            raise ValueError(f"model config has no 'arch' field: {sorted(d)}")
        return cls(**known)


def register(name: str, input_size: int = 224) -> Callable[[Builder], Builder]:
    """Decorator: add a builder ``f(num_classes=..., norm=..., **kw) -> nn.Module``."""

    def deco(fn: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        _DEFAULT_INPUT[name] = input_size
        return fn

    return deco


def list_models() -> list[str]:
    """Every registered architecture name, sorted."""
    return sorted(_MODELS)


def default_input_size(name: str) -> int:
    """The input size the architecture is designed for (32 for CIFAR nets, 224 for ImageNet)."""
    _check(name)
    return _DEFAULT_INPUT[name]


def _check(name: str) -> None:
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")


def create_model(name: str, num_classes: int = 1000, norm: str | None = None,
                 **kwargs: Any) -> nn.Module:
    """Build a registered classifier; ``norm`` (a ``norms`` name) where the architecture takes
    one. Unknown names raise a ``ValueError`` listing the known ones."""
    _check(name)
    model = _MODELS[name](num_classes=num_classes, norm=norm, **kwargs)
    model.config = ModelConfig(arch=name, num_classes=num_classes, norm=norm, kwargs=dict(kwargs))
    return model


def build_from_config(cfg: ModelConfig | dict[str, Any]) -> nn.Module:
    """Rebuild a model from its saved ``ModelConfig``."""
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    return create_model(cfg.arch, num_classes=cfg.num_classes, norm=cfg.norm, **cfg.kwargs)
