"""The names of normlab's norms and one line on each, as plain data: the command line builds its
choices and ``--help`` from this without importing torch. ``registry.py`` maps each name to its
class and checks at import that both lists agree."""
from __future__ import annotations

NORM_NAMES: tuple[str, ...] = ("bn", "in", "bn_in", "bin", "ibn", "gn", "ln", "sn")

# Conditional variants (one γ, β — and BIN's ρ — per style): "c" + a plain name.
CONDITIONAL_NORM_NAMES: tuple[str, ...] = tuple("c" + n for n in NORM_NAMES)

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
