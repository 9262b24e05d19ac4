"""normlab.norms — BN, IN, BN+IN, Batch-Instance Norm, IBN and friends for N×C×H×W CNNs.

Attributes load on first use (PEP 562), so ``from norms.catalog import NORM_NAMES`` — what the
command line needs for its choices and ``--help`` — does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS: dict[str, str] = {
    "CONDITIONAL_NORM_NAMES": "catalog",
    "NORM_DESCRIPTIONS": "catalog",
    "NORM_NAMES": "catalog",
    "ConditionalNorm": "conditional",
    "add_styles": "conditional",
    "conditional_layers": "conditional",
    "make_conditional": "conditional",
    "num_styles": "conditional",
    "set_style": "conditional",
    "style": "conditional",
    "batch_instance_norm": "functional",
    "batch_instance_norm_reference": "functional",
    "GateReport": "gates",
    "attach_gate_clipping": "gates",
    "clip_gates_": "gates",
    "gate_report": "gates",
    "iter_gates": "gates",
    "named_norm_parameters": "gates",
    "norm_parameters": "gates",
    "param_groups": "gates",
    "set_gates_": "gates",
    "BNIN2d": "layers",
    "BatchInstanceNorm2d": "layers",
    "BatchNorm2d": "layers",
    "GroupNorm2d": "layers",
    "IBN": "layers",
    "InstanceNorm2d": "layers",
    "LayerNorm2d": "layers",
    "SwitchableNorm2d": "layers",
    "CONDITIONAL_REGISTRY": "registry",
    "NORM_REGISTRY": "registry",
    "conditional_norm": "registry",
    "create_norm": "registry",
    "get_norm_layer": "registry",
    "InstanceStats": "statistics",
    "StatisticsBank": "statistics",
    "StreamState": "statistics",
    "capture_statistics": "statistics",
    "stream_statistics": "statistics",
    "use_statistics": "statistics",
    "batch_stats_synced": "sync",
    "sync_batch_stats": "sync",
    "unsync_batch_stats": "sync",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'norms' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
