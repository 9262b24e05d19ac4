"""normlab.classify: CIFAR and ImageNet classifiers with BN, IN, BN+IN, BIN and IBN (IBN-Net's
official models included), their training, and evaluations under domain shift."""
from . import cifar_resnet as _cifar_resnet  # noqa: F401  (registers models)
from . import densenet_ibn as _densenet_ibn  # noqa: F401
from . import resnet_ibn as _resnet_ibn  # noqa: F401
from .checkpoint import (
    Classifier,
    imagenet_class_names,
    load_classifier,
    load_official,
    load_state_strict,
    save_classifier,
)
from .analysis import feature_divergence, predict, shift_table
from .registry import ModelConfig, build_from_config, create_model, default_input_size, list_models
from .shift import SHIFTS, apply_shift
from .train import TrainConfig, evaluate, train


def list_shipped() -> list[str]:
    """Names of the trained classifiers shipped in ``weights/`` (manifest kind ``classify``)."""
    import weights

    return weights.names("classify")


__all__ = ["create_model", "list_models", "ModelConfig", "build_from_config", "default_input_size",
           "Classifier", "load_classifier", "load_official", "load_state_strict", "save_classifier",
           "imagenet_class_names", "TrainConfig", "train", "evaluate", "list_shipped", "predict",
           "SHIFTS", "apply_shift", "shift_table", "feature_divergence"]
