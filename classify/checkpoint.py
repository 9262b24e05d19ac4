"""Loading and saving classifiers: our safetensors (config + data facts in the metadata) and the
official IBN-Net ``.pth`` state dicts (weights-only, strict key check)."""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from engine.checkpoint import read_model, save_model
from engine.io import load_torch

from .registry import ModelConfig, build_from_config, create_model, default_input_size

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass
class Classifier:
    """A ready-to-run classifier: the network (eval mode) and what its inputs must look like."""

    model: nn.Module
    config: ModelConfig
    class_names: list[str]
    mean: list[float]
    std: list[float]
    image_size: int
    name: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names from torchvision's weight metadata (no download)."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def save_classifier(path: str | Path, model: nn.Module, *, class_names: list[str],
                    mean: list[float], std: list[float], image_size: int,
                    half: bool = False, recipe: dict[str, Any] | None = None, **meta: Any) -> Path:
    """Write ``model`` in the normlab checkpoint schema (``engine.checkpoint``): its
    ``ModelConfig``, the training recipe and the data facts (class names, normalisation, input
    size); ``half`` stores floating tensors as fp16, e.g. for shipping."""
    sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return save_model(path, sd, kind="classifier", config=model.config.to_dict(), recipe=recipe,
                      half=half, class_names=class_names, mean=mean, std=std,
                      image_size=image_size, **meta)


def strip_official(sd: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Unwrap a ``{"state_dict": ...}`` checkpoint and drop ``module.`` prefixes (DataParallel)."""
    if isinstance(sd, dict) and "state_dict" in sd and isinstance(sd["state_dict"], dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ValueError("checkpoint is not a state dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_state_strict(model: nn.Module, sd: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """``load_state_dict(strict=True)`` with a one-line error naming the first mismatching keys
    and shapes."""
    from engine.checkpoint import state_mismatch

    own = model.state_dict()
    why = state_mismatch(own, sd)
    if why:
        arch = getattr(getattr(model, "config", None), "arch", type(model).__name__)
        raise ValueError(f"{source} does not fit {arch}: {why}")
    with torch.no_grad():
        model.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)


def load_official(arch: str, path: str | Path, num_classes: int | None = None) -> nn.Module:
    """Build ``arch`` (e.g. ``resnet50_ibn_a``) and load an official IBN-Net ``.pth`` into it
    (``torch.load(weights_only=True)``; wrapped ``state_dict`` and ``module.`` prefixes are
    accepted; strict key check)."""
    try:
        sd = strip_official(load_torch(path))
    except ValueError as exc:
        raise ValueError(str(exc) if str(path) in str(exc) else f"{path}: {exc}") from None
    if num_classes is None:
        head = sd.get("fc.weight", sd.get("classifier.weight"))
        num_classes = int(head.shape[0]) if head is not None else 1000
    model = create_model(arch, num_classes=num_classes)
    load_state_strict(model, sd, str(path))
    return model


@functools.lru_cache(maxsize=8)
def _load_cached(spec: str, device: str, stamp: float) -> Classifier:
    return _load(spec, device)


def load_classifier(spec: str | Path, device: str = "cpu") -> Classifier:
    """A ``Classifier`` from a shipped name (``weights/manifest.json``), a ``.safetensors`` file
    of ours, or ``ARCH:FILE.pth`` for an official IBN-Net checkpoint. Cached; eval mode."""
    p = Path(spec)
    stamp = p.stat().st_mtime if p.is_file() else 0.0  # a rewritten file is reloaded
    return _load_cached(str(spec), str(device), stamp)


def _load(spec: str, device: str) -> Classifier:
    import weights

    name = spec
    path = Path(spec)
    if spec in weights.list("classify"):
        path = weights.resolve(spec, "classify")
    elif ":" in spec and spec.split(":", 1)[1].endswith((".pth", ".pt", ".pth.tar")) \
            and not path.exists():
        arch, file = spec.split(":", 1)
        model = load_official(arch, file).to(device).eval()
        n = model.config.num_classes
        names = imagenet_class_names() if n == 1000 else [str(i) for i in range(n)]
        return Classifier(model, model.config, names, IMAGENET_MEAN, IMAGENET_STD,
                          default_input_size(arch), name=Path(file).stem, meta={"source": file})
    elif spec in weights.names("stylize"):
        raise ValueError(f"{spec} is a shipped style model ({weights.manifest()[spec].get('norm')}), "
                         f"not a classifier (shipped classifiers: "
                         f"{', '.join(weights.names('classify')) or 'none'})")
    elif path.suffix != ".safetensors":
        shipped = ", ".join(weights.names("classify")) or "none"
        raise ValueError(f"no classifier {spec!r}: give a shipped name ({shipped}), a .safetensors "
                         "file, or ARCH:FILE.pth for an official IBN-Net checkpoint")
    else:
        name = path.parent.name if path.stem in ("model", "last") else path.stem
    tensors, meta = read_classifier_file(path)
    model = build_from_config(meta["config"])
    load_state_strict(model, tensors, str(path))
    del tensors
    model = model.float().to(device).eval()
    return Classifier(model, model.config, list(meta["class_names"]), list(meta["mean"]),
                      list(meta["std"]), int(meta["image_size"]), name=name, meta=meta)


def _finite_list(name: str, v: Any, n: int, lo: float, hi: float) -> list[float]:
    import math

    if not isinstance(v, list) or len(v) != n or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) for x in v):
        raise ValueError(f"{name} must be a list of {n} numbers, got {repr(v)[:60]}")
    if not all(lo <= x <= hi for x in v):
        raise ValueError(f"{name} must be numbers from {lo:g} to {hi:g}, got {str(v)[:60]}")
    return [float(x) for x in v]


def validate_classifier_meta(meta: dict[str, Any]) -> None:
    """One-line ``ValueError`` for the data facts of a classifier file (checked like the style
    configs, before a network is built or an image resized): ``image_size`` 8..1024 px (a
    crafted 60000 would resize every input to 10.8 GB), ``mean`` 3 numbers in [-10, 10], ``std``
    3 numbers in [1e-4, 100] (no division by 0), ``class_names`` one short string per class."""
    from engine.checkpoint import check_range

    cfg = ModelConfig.from_dict(meta["config"])
    for k in ("class_names", "mean", "std", "image_size"):
        if k not in meta:
            raise ValueError(f"no {k} in its metadata")
    check_range("image size", meta["image_size"], 8, 1024)
    _finite_list("mean", meta["mean"], 3, -10, 10)
    _finite_list("std", meta["std"], 3, 1e-4, 100)
    names = meta["class_names"]
    if not isinstance(names, list) or not all(isinstance(n, str) and len(n) <= 200 for n in names):
        raise ValueError("class_names must be a list of short strings")
    if len(names) != cfg.num_classes:
        raise ValueError(f"{len(names)} class names for {cfg.num_classes} classes")


def read_classifier_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a classifier file, its config and data facts validated first; any
    problem is one ``ValueError`` line that names the file."""
    path = Path(path)
    tensors, meta = read_model(path, "classifier", validate=ModelConfig.from_dict)
    try:
        validate_classifier_meta(meta)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from None
    return tensors, meta


def export_classifier(src: str | Path, dst: str | Path, half: bool = True) -> Path:
    """Re-save a classifier (metadata kept, schema brought up to date), fp16 when ``half``."""
    tensors, meta = read_classifier_file(src)
    for k in ("kind", "format", "dtype"):
        meta.pop(k, None)
    config, recipe = meta.pop("config"), meta.pop("recipe", None)
    return save_model(dst, tensors, kind="classifier", config=config, recipe=recipe, half=half, **meta)
