"""normlab.classify: CIFAR and ImageNet classifiers with BN, IN, BN+IN, BIN and IBN (IBN-Net's
official models included), their training, and evaluations under domain shift."""
from . import cifar_resnet as _cifar_resnet  # noqa: F401  (registers models)
from .registry import ModelConfig, build_from_config, create_model, default_input_size, list_models

__all__ = ["create_model", "list_models", "ModelConfig", "build_from_config", "default_input_size"]
