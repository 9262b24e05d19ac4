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

        validate_arch_norm(self.arch, self.norm, self.kwargs.get("ibn")
                           if isinstance(self.kwargs, dict) else None)
        check_range("number of classes", self.num_classes, 1, 100_000)
        if not isinstance(self.kwargs, dict):
            raise ValueError("model config kwargs must be a JSON object")
        for k, v in self.kwargs.items():
            if isinstance(v, bool) or v is None or isinstance(v, str) and len(v) < 64:
                continue
            vals = v if isinstance(v, (list, tuple)) else [v]
            if len(vals) > 8 or not all(isinstance(x, int) and 0 < x <= 4096 for x in vals):
                raise ValueError(f"model config argument {k}={v!r} is out of range")


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
