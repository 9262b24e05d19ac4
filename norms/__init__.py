"""normlab.norms — BN, IN, BN+IN, Batch-Instance Norm, IBN and friends for N×C×H×W CNNs.

``catalog`` says what each norm name means; ``get_norm_layer`` builds any of them, conditional
(multi-style) variants included. Importing this package imports torch: the command line imports
it inside its command bodies, so ``normlab --help`` stays light.
"""
from __future__ import annotations

from .catalog import (
    CATALOG,
    CONDITIONAL_NORM_NAMES,
    NORM_NAMES,
    NormSpec,
    check_names,
    conditional_name,
    is_conditional,
    norm_spec,
    plain_name,
    uses_batch_stats,
)
from .conditional import (
    ConditionalNorm,
    add_styles,
    conditional_layers,
    make_conditional,
    num_styles,
    set_style,
    style,
)
from .functional import batch_instance_norm, batch_instance_norm_reference
from .gates import (
    GateReport,
    attach_gate_clipping,
    clip_gates_,
    gate_report,
    iter_gates,
    named_norm_parameters,
    norm_parameters,
    param_groups,
    set_gates_,
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
from .registry import create_norm, get_norm_layer
from .statistics import (
    InstanceStats,
    StatisticsBank,
    StreamState,
    capture_statistics,
    stream_statistics,
    use_statistics,
)
from .sync import batch_stats_synced, sync_batch_stats, unsync_batch_stats
from .transfer import MeanCov, MeanStd, adain, mean_cov, mean_std, wct

__all__ = [
    "CATALOG", "CONDITIONAL_NORM_NAMES", "NORM_NAMES", "NormSpec", "check_names",
    "conditional_name", "is_conditional", "norm_spec", "plain_name", "uses_batch_stats",
    "ConditionalNorm", "add_styles", "conditional_layers", "make_conditional", "num_styles",
    "set_style", "style",
    "batch_instance_norm", "batch_instance_norm_reference",
    "GateReport", "attach_gate_clipping", "clip_gates_", "gate_report", "iter_gates",
    "named_norm_parameters", "norm_parameters", "param_groups", "set_gates_",
    "IBN", "BatchInstanceNorm2d", "BatchNorm2d", "BNIN2d", "GroupNorm1", "GroupNorm2d",
    "InstanceNorm2d", "SwitchableNorm2d",
    "create_norm", "get_norm_layer",
    "InstanceStats", "StatisticsBank", "StreamState", "capture_statistics", "stream_statistics",
    "use_statistics",
    "batch_stats_synced", "sync_batch_stats", "unsync_batch_stats",
    "MeanCov", "MeanStd", "adain", "mean_cov", "mean_std", "wct",
]
