"""Conditional normalization: one network, many styles.

Dumoulin, Shlens & Kudlur, "A Learned Representation for Artistic Style", ICLR 2017, eq. (5):
conditional instance normalization keeps one scale γ_s and shift β_s per style s,

    y = γ_s · (x − μ(x)) / σ(x) + β_s,

so one style network holds S styles, styles blend by convex combination of (γ, β), and a new style
can be learned by training only those parameters. The same holds for every norm here, since each
is "normalise, then per-channel affine": ``ConditionalNorm`` wraps any plain layer, removes its
per-channel γ, β (and BIN's gate ρ, which then is per style too) and owns S×C tables of them
instead. Which rows a forward pass uses is set on the model (``set_style`` / ``style``), not passed
through ``forward``, so a network's signature stays ``net(x)``:

- an int s: every sample uses style s (the fast path: the plain layer's own kernel);
- a LongTensor of N indices: sample n uses style idx[n];
- a float vector of S weights, or an N×S matrix (rows ≥ 0, summing to 1): γ, β, ρ are the
  weight-combined rows (a blend), for the batch or per sample.

State dict of a conditional layer: ``weight``, ``bias`` (and ``gate``) of shape S×C, plus the
wrapped layer's buffers and remaining parameters under ``norm.`` (running statistics, SN's
mixture weights), shared by all styles.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, ClassVar, Sequence, Union

import torch
from torch import Tensor, nn

from .functional import per_sample_affine
from .layers import (
    IBN,
    BatchInstanceNorm2d,
    BatchNorm2d,
    BNIN2d,
    GroupNorm1,
    GroupNorm2d,
    InstanceNorm2d,
    SwitchableNorm2d,
    _RunningStatsNorm,
)

Style = Union[int, Sequence[int], Sequence[float], Tensor, None]

AFFINE_NAMES = ("weight", "bias", "gate")


def _pop_affine(layer: nn.Module) -> dict[str, Tensor]:
    """Remove the per-channel affine parameters (γ, β and a learned ρ) from ``layer`` and return
    their values, C-wide, in channel order (IBN: its two halves concatenated)."""
    if isinstance(layer, IBN):
        halves = (layer.BN, layer.IN) if layer.bn_first else (layer.IN, layer.BN)
        parts = [_pop_affine(h) for h in halves]
        return {k: torch.cat([p[k] for p in parts]) for k in ("weight", "bias")}
    out: dict[str, Tensor] = {}
    for name in AFFINE_NAMES:
        p = layer._parameters.get(name)
        if isinstance(p, nn.Parameter):
            out[name] = p.detach().clone()
            setattr(layer, name, None)  # the wrapper owns it now, as an S×C table
    if "weight" not in out or "bias" not in out:
        raise ValueError(f"{type(layer).__name__} has no affine scale and shift (γ, β) to make "
                         "per style; build it with affine=True")
    return out


def _channels(layer: nn.Module) -> int:
    n = getattr(layer, "num_features", None) or getattr(layer, "num_channels", None)
    if n is None:
        raise ValueError(f"cannot tell the channel count of {type(layer).__name__}")
    return int(n)


class ConditionalNorm(nn.Module):
    """A norm layer with one row of γ, β (and ρ) per style; the style is set on the model with
    ``norms.set_style`` or ``norms.style``. Subclasses fix the wrapped layer (``base``);
    ``ConditionalNorm(C, S, layer=plain)`` wraps an existing one (its γ, β copied to every row).
    """

    base: ClassVar[type[nn.Module] | None] = None

    def __init__(self, num_channels: int, num_styles: int = 1, *, layer: nn.Module | None = None,
                 **norm_kwargs: Any) -> None:
        super().__init__()
        if int(num_styles) < 1:
            raise ValueError(f"number of styles must be at least 1, got {num_styles}")
        if layer is None:
            if self.base is None:
                raise ValueError("ConditionalNorm needs a layer to wrap (layer=...)")
            layer = self.base(num_channels, **norm_kwargs)
        if _channels(layer) != num_channels:
            raise ValueError(f"{type(layer).__name__} has {_channels(layer)} channels, "
                             f"not {num_channels}")
        self.num_features = num_channels
        self.num_styles = int(num_styles)
        rows = _pop_affine(layer)
        self.norm = layer
        self.affine_names: tuple[str, ...] = tuple(rows)
        for name, v in rows.items():  # every style starts as the plain layer
            self.register_parameter(name, nn.Parameter(v.unsqueeze(0).repeat(self.num_styles, 1)))
        self._style: int | Tensor | None = None

    @classmethod
    def from_layer(cls, layer: nn.Module, num_styles: int = 1) -> "ConditionalNorm":
        """Wrap an existing plain layer; every style starts with its γ, β (ρ)."""
        return ConditionalNorm(_channels(layer), num_styles, layer=layer)

    def _select(self, table: Tensor, n: int) -> Tensor:
        """The rows of ``table`` (S×C) for a batch of ``n``: C for one style or a shared blend,
        N×C per sample."""
        s = self._style
        if s is None:
            if self.num_styles == 1:
                return table[0]
            raise ValueError(f"no style selected for a network with {self.num_styles} styles: "
                             "call norms.set_style(model, style) first")
        if isinstance(s, int):
            return table[s]
        s = s.to(table.device)
        if s.dim() == 2 or s.dtype == torch.long:
            if s.shape[0] != n:
                raise ValueError(f"the style selection has {s.shape[0]} entries (one per image) "
                                 f"but the batch has {n} images")
        if s.dtype == torch.long:
            return table[s]  # N×C
        return s.to(table.dtype) @ table  # convex blend: C or N×C

    def forward(self, x: Tensor) -> Tensor:  # N×C×H×W -> N×C×H×W
        params = {k: self._select(getattr(self, k), x.shape[0]) for k in self.affine_names}
        forward_affine = getattr(self.norm, "forward_affine", None)
        if forward_affine is not None:  # fused: γ, β (ρ) enter the layer's own formula
            return forward_affine(x, **params)
        # any other layer (BatchNorm2d): normalise without affine, then per-sample γ, β
        return per_sample_affine(self.norm(x), params["weight"], params["bias"])

    def extra_repr(self) -> str:
        return f"{self.num_features}, num_styles={self.num_styles}"


class ConditionalBatchNorm2d(ConditionalNorm):
    """cbn: batch norm with per-style γ, β (de Vries et al. 2017 use it with predicted rows)."""

    base = BatchNorm2d


class ConditionalInstanceNorm2d(ConditionalNorm):
    """cin: conditional instance norm (Dumoulin et al., ICLR 2017, eq. 5)."""

    base = InstanceNorm2d


class ConditionalBNIN2d(ConditionalNorm):
    """cbn_in: BN+IN (ρ fixed at 0.5) with per-style γ, β."""

    base = BNIN2d


class ConditionalBatchInstanceNorm2d(ConditionalNorm):
    """cbin: Batch-Instance Norm with per-style γ, β and gate ρ (ρ still clipped to [0, 1] by
    ``norms.clip_gates_`` / ``attach_gate_clipping``; it gets the gate parameter group)."""

    base = BatchInstanceNorm2d


class ConditionalIBN(ConditionalNorm):
    """cibn: IBN with one per-style γ, β over all C channels (IN half and BN half)."""

    base = IBN


class ConditionalGroupNorm2d(ConditionalNorm):
    """cgn: group norm with per-style γ, β."""

    base = GroupNorm2d


class ConditionalGroupNorm1(ConditionalNorm):
    """cln: layer norm as one-group group norm (``GroupNorm1``) with per-style γ, β."""

    base = GroupNorm1


class ConditionalSwitchableNorm2d(ConditionalNorm):
    """csn: switchable norm with per-style γ, β (mixture weights shared by all styles)."""

    base = SwitchableNorm2d


def conditional_layers(model: nn.Module) -> list[tuple[str, ConditionalNorm]]:
    """(name, layer) of every conditional norm in ``model``, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ConditionalNorm)]


def num_styles(model: nn.Module) -> int:
    """How many styles the conditional norms of ``model`` hold (0 if it has none)."""
    counts = {m.num_styles for _, m in conditional_layers(model)}
    if len(counts) > 1:
        raise ValueError(f"the conditional norms of this model disagree on the number of styles: "
                         f"{sorted(counts)}")
    return counts.pop() if counts else 0


def _as_style(style: Style) -> int | Tensor | None:
    """Validate the form of a style selection (ranges are checked per layer)."""
    if style is None:
        return None
    if isinstance(style, bool):
        raise ValueError("a style must be an index, indices or blend weights, not a bool")
    if isinstance(style, int):
        return style
    if isinstance(style, (list, tuple)):
        if not style:
            raise ValueError("an empty style selection")
        if all(isinstance(v, int) and not isinstance(v, bool) for v in style):
            style = torch.tensor(style, dtype=torch.long)
        else:
            style = torch.tensor([float(v) for v in style], dtype=torch.float32)
    if not isinstance(style, Tensor):
        raise ValueError(f"a style must be an int, a list of ints (one per image), blend weights "
                         f"or a tensor, got {type(style).__name__}")
    style = style.detach()
    if not style.is_floating_point():
        if style.dim() == 0:
            return int(style)
        if style.dim() != 1:
            raise ValueError(f"style indices must be one per image (1-D), got shape "
                             f"{tuple(style.shape)}")
        return style.long().cpu()
    if style.dim() not in (1, 2):
        raise ValueError(f"style blend weights must be S or N×S, got shape {tuple(style.shape)}")
    style = style.float().cpu()
    if (style < 0).any() or not torch.allclose(style.sum(-1), torch.ones(()), atol=1e-4):
        raise ValueError(f"style blend weights must be ≥ 0 and sum to 1, got "
                         f"{[round(v, 4) for v in style.flatten().tolist()[:8]]}")
    return style


def _check_for(layer: ConditionalNorm, name: str, s: int | Tensor | None) -> None:
    S = layer.num_styles
    if s is None:
        return
    if isinstance(s, int):
        if not 0 <= s < S:
            raise ValueError(f"style {s} does not exist: this network has {S} styles (0–{S - 1})")
    elif s.dtype == torch.long:
        if s.numel() and (s.min() < 0 or s.max() >= S):
            raise ValueError(f"style indices {s.tolist()} out of range: this network has {S} "
                             f"styles (0–{S - 1})")
    elif s.shape[-1] != S:
        raise ValueError(f"{s.shape[-1]} blend weights for a network with {S} styles "
                         f"(layer {name!r})")


def set_style(model: nn.Module, style: Style) -> int:
    """Select the style(s) every conditional norm of ``model`` uses from now on.

    ``style``: an int (the whole batch), a list/LongTensor of N indices (one per image), a float
    vector of S blend weights or an N×S matrix (per image), each row ≥ 0 and summing to 1; None
    clears the selection. A Python list of ints means indices: write weights as floats. Returns
    the number of conditional layers set; raises ``ValueError`` if there are none.
    """
    s = _as_style(style)
    layers = conditional_layers(model)
    if not layers:
        raise ValueError("this model has no conditional norm layers (build it with a "
                         "conditional norm such as 'cin' or 'cbin' to select styles)")
    for name, layer in layers:
        _check_for(layer, name, s)
    for _, layer in layers:
        layer._style = s
    return len(layers)


@contextlib.contextmanager
def style(model: nn.Module, style: Style) -> Iterator[None]:
    """``set_style`` for the duration of a block; the previous selection is restored after."""
    saved = [(m, m._style) for _, m in conditional_layers(model)]
    set_style(model, style)
    try:
        yield
    finally:
        for m, s in saved:
            m._style = s


@torch.no_grad()
def add_styles(model: nn.Module, k: int = 1, init: int | None = None) -> int:
    """Grow every conditional norm of ``model`` by ``k`` styles, initialised to the mean of the
    existing rows (or to a copy of style ``init``). Returns the new number of styles; the new
    ones are ``old .. old + k − 1``. Parameters are replaced: build the optimizer afterwards."""
    S = num_styles(model)
    if S == 0:
        raise ValueError("this model has no conditional norm layers to add styles to")
    if k < 1:
        raise ValueError(f"number of styles to add must be at least 1, got {k}")
    if init is not None and not 0 <= init < S:
        raise ValueError(f"style {init} does not exist: this network has {S} styles")
    for _, layer in conditional_layers(model):
        for name in layer.affine_names:
            table = getattr(layer, name)
            row = table.mean(0, keepdim=True) if init is None else table[init:init + 1]
            new = torch.cat([table, row.expand(k, -1)]).detach().clone()
            setattr(layer, name, nn.Parameter(new, requires_grad=table.requires_grad))
        layer.num_styles = S + k
    return S + k


# Plain layers ``make_conditional`` converts (anything with per-channel γ, β).
_CONVERTIBLE = (nn.modules.batchnorm._BatchNorm, nn.InstanceNorm2d, nn.GroupNorm,
                _RunningStatsNorm, IBN)


def make_conditional(model: nn.Module, num_styles: int) -> nn.Module:
    """Replace, in place, every plain norm layer of ``model`` that has γ, β by a conditional one
    whose ``num_styles`` rows all start as that layer's parameters (e.g. to turn a single-style
    network into a multi-style one before fine-tuning). Returns ``model``."""
    if isinstance(model, _CONVERTIBLE):
        raise ValueError("make_conditional converts the norm layers inside a model; wrap a "
                         "single layer with ConditionalNorm.from_layer")

    def convert(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, ConditionalNorm):
                continue
            if isinstance(child, _CONVERTIBLE) and getattr(child, "weight", 1) is not None:
                setattr(module, name, ConditionalNorm.from_layer(child, num_styles))
            else:
                convert(child)

    convert(model)
    return model
