"""Model registry: ``create_model(name, num_classes=..., norm=..., ibn=...)`` over small builder
functions.

``norm`` is a ``norms`` name (what every normalization layer is); ``ibn`` is an architecture
argument, IBN-Net's placement of IN in the network: "a" (an IBN layer as the first norm of the
blocks of the shallow stages) or "b" (IN after the stem and after the residual sums of the
shallow stages), BN or ``norm`` elsewhere. Architectures named ``*_ibn_a`` / ``*_ibn_b`` have their
placement fixed by the name (IBN-Net's official model names).

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
_IBN: dict[str, tuple[str | None, ...]] = {}  # IBN placements it accepts; one: fixed by the name
IBN_PLACEMENTS = ("a", "b")
# Norm names that asked for an IBN placement (with BN elsewhere) before placement was an
# argument; saved configs (the shipped cifar10_resnet20_ibn_a says norm "ibn") and command lines
# use them, so they keep meaning that, here and nowhere else.
IBN_NORM_ALIASES = {"ibn": "a", "ibn_a": "a", "ibn_b": "b"}


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
        ibn = self.kwargs.get("ibn") if isinstance(self.kwargs, dict) else None
        if ibn is not None and not isinstance(ibn, str):
            raise ValueError(f"ibn must be a placement name, got {type(ibn).__name__}")
        validate_arch_norm(self.arch, self.norm, ibn)
        # an fc layer of 2048 × 22k classes is 180 MB (ImageNet-21k has 21,841 classes)
        check_range("number of classes", self.num_classes, 1, 22_000)
        if not isinstance(self.kwargs, dict):
            raise ValueError("model config kwargs must be a JSON object")
        allowed = _KWARGS.get(_family(self.arch), {})
        takes = list(allowed) + (["ibn"] if _IBN[self.arch] != (None,) else [])
        for k, v in self.kwargs.items():
            if k == "ibn":  # the IBN placement, checked by validate_arch_norm above
                continue
            if k not in allowed:
                raise ValueError(f"{self.arch} takes no argument {str(k)[:40]!r} "
                                 f"(it takes: {', '.join(takes) or 'none'})")
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


def register(name: str, input_size: int = 224, norms: tuple[str, ...] | None = None,
             ibn: tuple[str | None, ...] = (None,)) -> Callable[[Builder], Builder]:
    """Decorator: add a builder ``f(num_classes=..., norm=..., ibn=..., **kw) -> nn.Module`` that
    accepts the ``norms`` names (None: every registered norm) and the IBN placements ``ibn``
    (``(None,)``: none; ``("a",)``: IBN-a, fixed; ``(None, "a", "b")``: a choice)."""

    def deco(fn: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        _MODELS[name] = fn
        _DEFAULT_INPUT[name] = input_size
        _NORMS[name] = norms
        _IBN[name] = tuple(ibn)
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


def resolve_arch_norm(arch: str, norm: str | None, ibn: str | None = None
                      ) -> tuple[str | None, str | None]:
    """(norm, IBN placement) that ``arch`` is built with: a legacy norm name that meant a
    placement ("ibn", "ibn_a", "ibn_b") becomes BN plus that placement, and a name that fixes
    the placement (``resnet20_ibn_a``) supplies it. ``ValueError`` at once (before any work) for
    an unknown architecture, norm or placement, or one the architecture does not take, naming
    what it does take."""
    from norms import check_names

    _check(arch)
    placements = _IBN[arch]
    if norm is not None and norm in IBN_NORM_ALIASES and placements != (None,):
        implied = IBN_NORM_ALIASES[norm]
        if ibn is not None and ibn != implied:
            raise ValueError(f"norm {norm!r} means the IBN-{implied} placement, but ibn={ibn!r} "
                             f"was given; pass norm='bn', ibn={ibn!r}")
        norm, ibn = "bn", implied
    if ibn is None and len(placements) == 1:
        ibn = placements[0]
    if ibn not in placements:
        if ibn not in (None,) + IBN_PLACEMENTS:
            raise ValueError(f"unknown IBN placement {ibn!r}; known: {', '.join(IBN_PLACEMENTS)}")
        takes = ", ".join("none" if p is None else f"IBN-{p}" for p in placements)
        raise ValueError(f"{arch} takes the IBN placement(s) {takes}, not "
                         f"{'none' if ibn is None else 'IBN-' + ibn}")
    if norm is None:
        return norm, ibn
    allowed = _NORMS[arch]
    if allowed is None:
        if norm in ("ibn_a", "ibn_b"):  # only architectures with placements read these
            raise ValueError(f"{arch} has no IBN placements; norm {norm!r} needs an "
                             f"architecture that has (e.g. a ResNet)")
        check_names([norm])  # plain norms only (a classifier has no styles)
    elif norm not in allowed:
        raise ValueError(f"{arch} uses {'/'.join(allowed)} outside its IBN layers (the official "
                         f"layout); for norm {norm!r} pick an architecture without the IBN suffix")
    return norm, ibn


def validate_arch_norm(arch: str, norm: str | None, ibn: str | None = None) -> None:
    """``resolve_arch_norm`` for its errors only."""
    resolve_arch_norm(arch, norm, ibn)


def create_model(name: str, num_classes: int = 1000, norm: str | None = None,
                 ibn: str | None = None, **kwargs: Any) -> nn.Module:
    """Build a registered classifier: ``norm`` (a ``norms`` name) where the architecture takes
    one, ``ibn`` ("a", "b") the IBN-Net placement where it takes one (see the module docstring).
    Unknown names raise a ``ValueError`` listing the known ones."""
    built_norm, built_ibn = resolve_arch_norm(name, norm, ibn)
    if _IBN[name] != (None,):
        kwargs_b = dict(kwargs, ibn=built_ibn)
    else:
        kwargs_b = dict(kwargs)
    model = _MODELS[name](num_classes=num_classes, norm=built_norm, **kwargs_b)
    saved = dict(kwargs) if ibn is None else dict(kwargs, ibn=ibn)  # as asked: rebuilds the same
    model.config = ModelConfig(arch=name, num_classes=num_classes, norm=norm, kwargs=saved)
    return model


def build_from_config(cfg: ModelConfig | dict[str, Any]) -> nn.Module:
    """Rebuild a model from its saved ``ModelConfig``."""
    if isinstance(cfg, dict):
        cfg = ModelConfig.from_dict(cfg)
    return create_model(cfg.arch, num_classes=cfg.num_classes, norm=cfg.norm, **cfg.kwargs)


# The builders register themselves on import; importing them here means that whoever reaches the
# registry (``classify.registry``, ``classify.checkpoint``, ...) finds every architecture, however
# the package was entered.
from . import cifar_resnet as _cifar_resnet  # noqa: E402,F401
from . import densenet_ibn as _densenet_ibn  # noqa: E402,F401
from . import resnet_ibn as _resnet_ibn  # noqa: E402,F401
