"""What a norm name means: one ``NormSpec`` per norm, the one place that says which layer a name
builds, its conditional (multi-style) variant, whether it uses batch statistics, whether it has a
learned gate ρ, and the paper it comes from (timm's ``create_norm`` map, plus the facts that
stylize, classify and the faces would otherwise restate).

Conditional variants (one γ, β — and BIN's ρ — per style, ``conditional.py``) are named with a
"c" in front ("cin", "cbin"); model files store those names, so they stay valid, and
``norm_spec`` / ``plain_name`` / ``conditional_name`` are the only code that knows the spelling.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from torch import nn

from .conditional import (
    ConditionalBatchInstanceNorm2d,
    ConditionalBatchNorm2d,
    ConditionalBNIN2d,
    ConditionalGroupNorm1,
    ConditionalGroupNorm2d,
    ConditionalIBN,
    ConditionalInstanceNorm2d,
    ConditionalNorm,
    ConditionalSwitchableNorm2d,
)
from .layers import (
    IBN,
    BatchInstanceNorm2d,
    BatchNorm2d,
    BNIN2d,
    GroupNorm1,
    GroupNorm2d,
    InstanceNorm2d,
    SwitchableNorm2d,
)

CONDITIONAL_PREFIX = "c"


@dataclass(frozen=True)
class NormSpec:
    """One norm: its name, a line on it, its paper, and how it behaves.

    batch_stats: in training mode the output for one image depends on the other images of the
        batch (it needs a batch of 2 or more, and DDP has to sync it).
    gated: it has a learned gate ρ in [0, 1] (clipped after each step, its own parameter group).
    layer: the class ``get_norm_layer(name)`` builds; ``conditional``: the class
        ``get_norm_layer(name, num_styles=S)`` builds (None: the norm has no multi-style form).
    """

    name: str
    description: str
    paper: str
    batch_stats: bool
    gated: bool
    layer: type[nn.Module]
    conditional: type[ConditionalNorm] | None = None

    @property
    def conditional_name(self) -> str | None:
        """The name model files give the conditional variant ("bin" → "cbin")."""
        return None if self.conditional is None else CONDITIONAL_PREFIX + self.name


_SPECS = (
    NormSpec("bn", "Batch Norm: statistics over the batch and space per channel; running "
             "averages in eval.",
             "Ioffe & Szegedy, *Batch Normalization*, ICML 2015 — arXiv:1502.03167",
             batch_stats=True, gated=False, layer=BatchNorm2d,
             conditional=ConditionalBatchNorm2d),
    NormSpec("in", "Instance Norm: statistics per image and channel; removes per-image contrast "
             "and style.",
             "Ulyanov, Vedaldi & Lempitsky, *Instance Normalization*, 2016 — arXiv:1607.08022",
             batch_stats=False, gated=False, layer=InstanceNorm2d,
             conditional=ConditionalInstanceNorm2d),
    NormSpec("bn_in", "BN+IN: the average of the batch- and instance-normalised outputs (ρ fixed "
             "at 0.5).",
             "Nam & Kim 2018 (the naive ensemble baseline of the BIN paper) — arXiv:1805.07925",
             batch_stats=True, gated=False, layer=BNIN2d, conditional=ConditionalBNIN2d),
    NormSpec("bin", "Batch-Instance Norm (Nam & Kim 2018): a learned per-channel gate ρ mixes BN "
             "and IN.",
             "Nam & Kim, *Batch-Instance Normalization for Adaptively Style-Invariant Neural "
             "Networks*, NeurIPS 2018 — arXiv:1805.07925",
             batch_stats=True, gated=True, layer=BatchInstanceNorm2d,
             conditional=ConditionalBatchInstanceNorm2d),
    NormSpec("ibn", "IBN (Pan et al. 2018): IN on half of the channels, BN on the other half.",
             "Pan, Luo, Shi & Tang, *Two at Once: Enhancing Learning and Generalization "
             "Capacities via IBN-Net*, ECCV 2018 — arXiv:1807.09441",
             batch_stats=True, gated=False, layer=IBN, conditional=ConditionalIBN),
    NormSpec("gn", "Group Norm (Wu & He 2018): statistics per image over groups of channels.",
             "Wu & He, *Group Normalization*, ECCV 2018 — arXiv:1803.08494",
             batch_stats=False, gated=False, layer=GroupNorm2d, conditional=ConditionalGroupNorm2d),
    NormSpec("ln", "Layer Norm as Group Norm with one group (timm's GroupNorm1): statistics "
             "per image over all channels and space.",
             "Ba, Kiros & Hinton, *Layer Normalization*, 2016 — arXiv:1607.06450",
             batch_stats=False, gated=False, layer=GroupNorm1, conditional=ConditionalGroupNorm1),
    NormSpec("sn", "Switchable Norm (Luo et al. 2019): learned softmax mix of IN, LN and BN "
             "statistics.",
             "Luo, Ren, Peng, Zhang & Li, *Differentiable Learning-to-Normalize via Switchable "
             "Normalization*, ICLR 2019 — arXiv:1806.10779",
             batch_stats=True, gated=False, layer=SwitchableNorm2d,
             conditional=ConditionalSwitchableNorm2d),
)

CATALOG: dict[str, NormSpec] = {s.name: s for s in _SPECS}
NORM_NAMES: tuple[str, ...] = tuple(CATALOG)
CONDITIONAL_NORM_NAMES: tuple[str, ...] = tuple(
    s.conditional_name for s in _SPECS if s.conditional_name is not None)


def _key(name: str) -> str:
    """Spelling variants users type: "BIN", "bn+in", "bn-in"."""
    return name.strip().lower().replace("-", "_").replace("+", "_")


def _unknown(name: object) -> ValueError:
    return ValueError(f"unknown norm {name!r}; known norms: {', '.join(NORM_NAMES)}; "
                      f"conditional (one γ, β per style): {', '.join(CONDITIONAL_NORM_NAMES)}")


def resolve(name: str) -> tuple[NormSpec, bool]:
    """(spec, is the conditional variant) of a norm name such as "bin" or "cbin"; unknown names
    raise a ``ValueError`` listing the known ones."""
    if not isinstance(name, str):
        raise _unknown(name)
    key = _key(name)
    if key in CATALOG:
        return CATALOG[key], False
    if key.startswith(CONDITIONAL_PREFIX):
        spec = CATALOG.get(key[len(CONDITIONAL_PREFIX):])
        if spec is not None and spec.conditional is not None:
            return spec, True
    raise _unknown(name)


def norm_spec(name: str) -> NormSpec:
    """The ``NormSpec`` of a plain or conditional norm name ("cbin" → the spec of "bin")."""
    return resolve(name)[0]


def is_conditional(name: str) -> bool:
    """True for the name of a conditional variant ("cbin")."""
    return resolve(name)[1]


def plain_name(name: str) -> str:
    """The norm without its conditional form: "cbin" → "bin", "bin" → "bin"."""
    return resolve(name)[0].name


def conditional_name(name: str) -> str:
    """The conditional variant's name: "bin" → "cbin", "cbin" → "cbin"."""
    spec = norm_spec(name)
    if spec.conditional_name is None:
        raise ValueError(f"norm {spec.name!r} has no conditional (multi-style) variant")
    return spec.conditional_name


def uses_batch_stats(name: str) -> bool:
    """Whether norm ``name`` (plain or conditional) uses batch statistics in training."""
    return norm_spec(name).batch_stats


def check_names(names: Iterable[str], conditional: bool = False) -> list[str]:
    """``names`` as given, or one ``ValueError`` naming every unknown one and listing the known
    ones (conditional names are accepted when ``conditional``)."""
    names = list(names)
    bad = []
    for n in names:
        try:
            _, cond = resolve(n)
        except ValueError:
            cond = None
        if cond is None or (cond and not conditional):
            bad.append(n)
    if bad:
        known = NORM_NAMES + (CONDITIONAL_NORM_NAMES if conditional else ())
        raise ValueError(f"unknown norm(s) {', '.join(map(str, bad))}; known: {', '.join(known)}")
    return names
