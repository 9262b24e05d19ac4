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
_NORMS: dict[str, tuple[str, ...] | None] = {}  # norms an architecture accepts (None: any)
# CIFAR ResNets also take these names for their IBN-a / IBN-b layouts (see cifar_resnet.py)
IBN_ALIASES = ("ibn_a", "ibn_b")


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
        """A validated config (bounds and names checked before anything is built)."""
        if not isinstance(d, dict):
            raise ValueError("model config must be a JSON object")
        known = {k: d[k] for k in ("arch", "num_classes", "norm", "kwargs") if k in d}
        if "arch" not in known:
            raise ValueError(f"model config has no 'arch' field: {sorted(d)}")
        cfg = cls(**known)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """One-line ``ValueError`` for an unknown architecture or norm, a class count out of
        range, or extra arguments that are not small plain values. Runs before any tensor is
        allocated, so a crafted checkpoint cannot make the loader build a huge network."""
        from engine.checkpoint import check_range

        if not isinstance(self.arch, str) or self.arch not in _MODELS:
            shown = repr(self.arch)
            shown = shown if len(shown) <= 60 else shown[:60] + "…"
            raise ValueError(f"unknown architecture {shown} (only registered ones are built; "
                             "see `classify list`)")
        if self.norm is not None and not isinstance(self.norm, str):
            raise ValueError(f"norm must be a name, got {type(self.norm).__name__}")
        validate_arch_norm(self.arch, self.norm)
        # an fc layer of 2048 × 22k classes is 180 MB (ImageNet-21k has 21,841 classes)
        check_range("number of classes", self.num_classes, 1, 22_000)
        if not isinstance(self.kwargs, dict):
            raise ValueError("model config kwargs must be a JSON object")
        allowed = _KWARGS.get(_family(self.arch), {})
        for k, v in self.kwargs.items():
            if k not in allowed:
                raise ValueError(f"{self.arch} takes no argument {str(k)[:40]!r} "
                                 f"(it takes: {', '.join(allowed) or 'none'})")
            count, lo, hi = allowed[k]
            vals = v if count and isinstance(v, list) else [v]
            if count and (not isinstance(v, list) or len(v) != count):
                raise ValueError(f"model config argument {k} must be a list of {count} integers")
            for x in vals:
                check_range(f"model config argument {k}", x, lo, hi)


# The extra constructor arguments a saved config may carry, per architecture family, with
# bounds that keep a crafted file's network small: name -> (list length or 0, low, high).
# CIFAR ResNet-110 with widths 256 is 64 M parameters (0.25 GB fp32).
_KWARGS: dict[str, dict[str, tuple[int, int, int]]] = {
    "cifar": {"widths": (3, 1, 256)},
    "densenet": {"growth": (0, 1, 64), "init_features": (0, 1, 256), "bn_size": (0, 1, 8)},
    "resnet": {},
}


def _family(arch: str) -> str:
    if arch.startswith("densenet"):
        return "densenet"
    return "cifar" if _DEFAULT_INPUT.get(arch) == 32 else "resnet"


def register(name: str, input_size: int = 224, norms: tuple[str, ...] | None = None
             ) -> Callable[[Builder], Builder]:
    """Decorator: add a builder ``f(num_classes=..., norm=..., **kw) -> nn.Module`` that accepts
    the ``norms`` names (None: every registered norm)."""

    def deco(fn: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        _DEFAULT_INPUT[name] = input_size
        _NORMS[name] = norms
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
    if not isinstance(name, str) or name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")


def validate_arch_norm(arch: str, norm: str | None) -> None:
    """``ValueError`` at once (before any work) for an unknown architecture or a norm it does not
    take, naming what it does take."""
    from norms import NORM_NAMES

    _check(arch)
    allowed = _NORMS[arch]
    if norm is None:
        return
    if allowed is None:
        if norm not in NORM_NAMES and norm not in IBN_ALIASES:
            raise ValueError(f"unknown norm {norm!r}; known: {', '.join(NORM_NAMES)}")
    elif norm not in allowed:
        raise ValueError(f"{arch} uses {'/'.join(allowed)} outside its IBN layers (the official "
                         f"layout); for norm {norm!r} pick an architecture without the IBN suffix")


def create_model(name: str, num_classes: int = 1000, norm: str | None = None,
                 **kwargs: Any) -> nn.Module:
    """Build a registered classifier; ``norm`` (a ``norms`` name) where the architecture takes
    one. Unknown names raise a ``ValueError`` listing the known ones."""
    validate_arch_norm(name, norm)
    model = _MODELS[name](num_classes=num_classes, norm=norm, **kwargs)
    model.config = ModelConfig(arch=name, num_classes=num_classes, norm=norm, kwargs=dict(kwargs))
    return model


def build_from_config(cfg: ModelConfig | dict[str, Any]) -> nn.Module:
    """Rebuild a model from its saved ``ModelConfig``."""
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    return create_model(cfg.arch, num_classes=cfg.num_classes, norm=cfg.norm, **cfg.kwargs)
