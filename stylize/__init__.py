"""normlab.stylize — Johnson et al. (2016) feed-forward style transfer with any normalization layer
(BN, IN, BN+IN, BIN, IBN, ...): train, run, compare, benchmark.

Names load on first use (PEP 562), so ``stylize.oneshot`` — a cached ONNX export run by
onnxruntime — and ``stylize train --help`` start without importing torch. ``stylize.train`` is
the training module (its function: ``stylize.train.train``), as ``classify.train`` is."""
from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "load_image": "engine.images", "save_image": "engine.images",
    "StyleModel": ".infer", "compare_grid": ".infer", "list_models": ".infer",
    "load_model": ".infer", "stylize_image": ".infer",
    "PerceptualLoss": ".losses", "load_vgg_encoder": ".losses",
    "StyleConfig": ".model", "TransformerNet": ".model", "load_examples_pth": ".model",
    "TrainConfig": ".config",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        try:  # a submodule (``stylize.model``), as an eager package would have imported it
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise  # the submodule exists but needs something missing
            raise AttributeError(f"module 'stylize' has no attribute {name!r}") from None
    mod = _EXPORTS[name]
    value = getattr(importlib.import_module(mod, __name__ if mod.startswith(".") else None), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
