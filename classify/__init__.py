"""normlab.classify: CIFAR and ImageNet classifiers with BN, IN, BN+IN, BIN and IBN (IBN-Net's
official models included), their training, and evaluations under domain shift.

Importing the package loads only the torch-free ``TrainConfig`` (``classify.config``: the CLI
builds ``classify train --help`` from it without torch); the other names below load their module
on first use. ``classify.train`` is the training module (its function: ``classify.train.train``)."""
from __future__ import annotations

import importlib
from typing import Any

from .config import TrainConfig

# public name → the module that defines it (imported on first use of the name)
_HOMES = {
    "Classifier": "checkpoint", "imagenet_class_names": "checkpoint",
    "load_classifier": "checkpoint", "load_official": "checkpoint",
    "load_state_strict": "checkpoint", "save_classifier": "checkpoint",
    "feature_divergence": "analysis", "predict": "analysis", "shift_table": "analysis",
    "ModelConfig": "registry", "build_from_config": "registry", "create_model": "registry",
    "default_input_size": "registry", "list_models": "registry",
    "SHIFTS": "shift", "apply_shift": "shift",
    "evaluate": "train",
}


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module 'classify' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    globals()[name] = value
    return value


def list_shipped() -> list[str]:
    """Names of the trained classifiers shipped in ``weights/`` (manifest kind ``classify``)."""
    import weights

    return weights.names("classify")


__all__ = ["create_model", "list_models", "ModelConfig", "build_from_config", "default_input_size",
           "Classifier", "load_classifier", "load_official", "load_state_strict", "save_classifier",
           "imagenet_class_names", "TrainConfig", "train", "evaluate", "list_shipped", "predict",
           "SHIFTS", "apply_shift", "shift_table", "feature_divergence"]
