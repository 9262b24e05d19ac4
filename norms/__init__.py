"""normlab.norms — BN, IN, BN+IN, Batch-Instance Norm, IBN and friends for N×C×H×W CNNs."""
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
    GroupNorm2d,
    InstanceNorm2d,
    LayerNorm2d,
    SwitchableNorm2d,
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
from .registry import NORM_DESCRIPTIONS, NORM_NAMES, NORM_REGISTRY, create_norm, get_norm_layer
from .registry import CONDITIONAL_NORM_NAMES, CONDITIONAL_REGISTRY, conditional_norm
from .statistics import (
    InstanceStats,
    StatisticsBank,
    capture_statistics,
    stream_statistics,
    use_statistics,
)
from .sync import batch_stats_synced, sync_batch_stats, unsync_batch_stats

__all__ = [
    "NORM_NAMES", "NORM_REGISTRY", "NORM_DESCRIPTIONS", "get_norm_layer", "create_norm",
    "param_groups", "clip_gates_", "attach_gate_clipping", "gate_report", "GateReport",
    "iter_gates", "set_gates_", "batch_instance_norm", "batch_instance_norm_reference",
    "BatchNorm2d", "InstanceNorm2d", "BatchInstanceNorm2d", "BNIN2d", "IBN", "GroupNorm2d",
    "LayerNorm2d", "SwitchableNorm2d",
    "capture_statistics", "use_statistics", "stream_statistics", "StatisticsBank", "InstanceStats",
    "ConditionalNorm", "CONDITIONAL_NORM_NAMES", "CONDITIONAL_REGISTRY", "conditional_norm",
    "set_style", "style", "add_styles", "num_styles", "conditional_layers", "make_conditional",
    "norm_parameters", "named_norm_parameters",
    "sync_batch_stats", "unsync_batch_stats", "batch_stats_synced",
]
