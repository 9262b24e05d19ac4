"""One checkpoint schema for every normlab model (style networks and classifiers).

A model file is safetensors whose metadata holds, as JSON:

- ``kind``: ``"style"`` or ``"classifier"``;
- ``format``: the schema version (``FORMAT``);
- ``config``: the model config that rebuilds the network (``StyleConfig`` / ``ModelConfig``);
- ``recipe``: the training recipe that produced it (absent for imported weights);
- data facts the model needs at run time (classifiers: ``class_names``, ``mean``, ``std``,
  ``image_size``; style models: ``styles``) and results (losses, accuracy, ...).

``read_model`` reads the metadata first, checks the kind and lets the caller validate the config
with bounds *before* any tensor is read or any network is built, so a crafted file cannot make a
server allocate gigabytes (see the hardening issue). Files written before this schema
(``kind: "stylize"``, or ``format: "normlab.classify/1"`` without a kind) are read as their kind.

Training state (``checkpoint.pt``) is a weights-only PyTorch file: see ``engine.trainer``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import torch

from .io import check_safetensors_digest, save_safetensors

FORMAT = 1
KINDS = {"style": "style model", "classifier": "classifier", "decoder": "style decoder"}
_LEGACY_KINDS = {"stylize": "style", "classify": "classifier"}


def describe(meta: dict[str, Any]) -> str:
    """Short human description of a model from its metadata: ``classifier (resnet20, bin)``."""
    kind = KINDS.get(meta.get("kind", ""), "model")
    cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    facts = [str(cfg[k]) for k in ("arch", "norm") if cfg.get(k)]
    styles = meta.get("styles")
    if meta.get("kind") == "style" and isinstance(styles, list) and styles:
        facts.append(", ".join(map(str, styles[:4])) + ("…" if len(styles) > 4 else ""))
    return f"{kind} ({', '.join(facts)})" if facts else kind


def save_model(path: str | Path, state: dict[str, torch.Tensor], *, kind: str,
               config: dict[str, Any], recipe: dict[str, Any] | None = None, half: bool = False,
               **meta: Any) -> Path:
    """Write a model atomically in the normlab schema; ``half`` stores floats as fp16."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; known: {', '.join(KINDS)}")
    tensors = {k: (_half(v.detach()) if half and v.is_floating_point() else v.detach())
               for k, v in state.items()}
    md = {"kind": kind, "format": FORMAT, "config": config, **meta}
    if recipe is not None:
        md["recipe"] = recipe
    if half:
        md["dtype"] = "float16"
    save_safetensors(path, tensors, md)
    return Path(path)


def _half(t: torch.Tensor) -> torch.Tensor:
    """``t`` as fp16, or unchanged where fp16 cannot hold it: a BN running variance of a first
    layer fed 0–255 pixels exceeds fp16's 65504 and would load as inf (its BN branch then
    outputs 0, and training on from it turns the running statistics to NaN)."""
    h = t.half()
    return h if bool(torch.isfinite(h).all()) or not bool(torch.isfinite(t).all()) else t


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The JSON metadata of a safetensors model file, without reading any tensor; ``kind``
    normalised for files written before the schema. One-line ``ValueError`` for a missing or
    non-safetensors file."""
    meta: dict[str, Any] = {}
    for k, v in _raw_metadata(path).items():
        try:
            meta[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            meta[k] = v
    kind = meta.get("kind")
    if kind in _LEGACY_KINDS:
        meta["kind"] = _LEGACY_KINDS[kind]
    elif kind is None and str(meta.get("format", "")).startswith("normlab.classify"):
        meta["kind"] = "classifier"
    return meta


def _raw_metadata(path: str | Path) -> dict[str, str]:
    """The header's metadata as stored (JSON text values)."""
    path = Path(path)
    if not path.exists():
        raise ValueError(f"model file {path} not found")
    if not path.is_file():
        from .io import file_type

        raise ValueError(f"{path} is a {file_type(path)}, not a model file")
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else -1
            # the header is JSON of the tensor table plus metadata; 100 MB is far above any real one
            if n <= 1 or n > 100_000_000 or n > path.stat().st_size - 8:
                raise ValueError
            header = json.loads(f.read(n))
        raw = header.get("__metadata__") or {}
        if not isinstance(raw, dict):
            raise ValueError
    except (ValueError, UnicodeDecodeError, OSError):
        raise ValueError(f"{path} is not a safetensors model file") from None
    return raw


def check_kind(meta: dict[str, Any], kind: str, source: str | Path) -> None:
    """``ValueError`` naming what the file is when it is not a ``kind`` model."""
    if meta.get("kind") == kind:
        return
    if meta.get("kind") in KINDS:
        raise ValueError(f"{source} is a {describe(meta)}, not a {KINDS[kind]}")
    raise ValueError(f"{source} is not a normlab {KINDS[kind]} (no model kind in its metadata)")


def read_model(path: str | Path, kind: str, validate: Callable[[dict[str, Any]], Any] | None = None,
               device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, metadata) of a ``kind`` model file. The kind is checked and ``validate(config)``
    runs (bounds, known names) before a single tensor is read."""
    from safetensors import safe_open

    meta = read_metadata(path)
    check_kind(meta, kind, path)
    if not isinstance(meta.get("config"), dict):
        raise ValueError(f"{path} has no model config in its metadata")
    if validate is not None:
        try:
            validate(meta["config"])
        except ValueError as exc:  # name the user's file: "x.safetensors: image size must ..."
            msg = str(exc)
            raise ValueError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several internal error types
        raise ValueError(f"{path} is not a readable safetensors file ({exc})") from None
    check_safetensors_digest(path, tensors, _raw_metadata(path))
    return tensors, meta


def check_range(name: str, value: Any, lo: float, hi: float, *, integer: bool = True) -> None:
    """``ValueError`` unless ``lo ≤ value ≤ hi`` (and an int when ``integer``): config bounds."""
    ok = isinstance(value, int) and not isinstance(value, bool) if integer else \
        isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not (lo <= value <= hi):
        kind = "an integer" if integer else "a number"
        raise ValueError(f"{name} must be {kind} from {lo:g} to {hi:g}, got {value!r}")


# ---------------------------------------------------------------------- training state (resume)

CHECKPOINT = "checkpoint.pt"
PREVIOUS = "checkpoint.prev.pt"  # the checkpoint before the newest, kept for a damaged newest


def save_state(path: str | Path, state: dict[str, Any], *, keep_previous: bool = True) -> None:
    """Write training state atomically with its sha256 (``state["sha256"]``): a temp file in the
    same folder, fsync, read back and verified, then the current file becomes ``PREVIOUS`` (when
    ``keep_previous``) and the temp file takes its name. A full disk (``DiskFullError``) or any
    other failure leaves the files as they were."""
    import os

    import torch

    from .io import CHECKSUM_KEY, atomic_path, content_digest, load_torch, tensor_bytes

    path = Path(path)
    state = {k: v for k, v in state.items() if k != CHECKSUM_KEY}
    state[CHECKSUM_KEY] = content_digest(state)
    with atomic_path(path, needed=tensor_bytes(state)) as tmp:
        torch.save(state, tmp)
        back = load_torch(tmp)  # what the disk holds, before anything older is given up
        if not isinstance(back, dict) or back.get(CHECKSUM_KEY) != _state_digest(back):
            raise ValueError(f"the checkpoint written to {path} does not read back intact; "
                             "the previous one was kept")
        if keep_previous and path.is_file():
            os.replace(path, path.with_name(PREVIOUS))


def _state_digest(state: dict[str, Any]) -> str:
    from .io import CHECKSUM_KEY, content_digest

    return content_digest({k: v for k, v in state.items() if k != CHECKSUM_KEY})


def read_state(path: str | Path) -> dict[str, Any]:
    """One verified training-state file; one-line ``ValueError`` naming it when it is not a
    normlab checkpoint, its checksum does not match (files written before checksums pass) or a
    part is missing or of the wrong type (``check_state``)."""
    from .io import CHECKSUM_KEY, load_torch

    path = Path(path)
    state = load_torch(path)
    if not isinstance(state, dict) or "step" not in state or "recipe" not in state:
        raise ValueError(f"{path} is not a normlab training checkpoint")
    if CHECKSUM_KEY in state and state[CHECKSUM_KEY] != _state_digest(state):
        raise ValueError(f"{path} is damaged: its sha256 checksum does not match its contents")
    check_state(state, path)
    return state


def check_state(state: dict[str, Any], path: str | Path) -> None:
    """One-line ``ValueError`` naming ``path`` when a training checkpoint lacks a part or holds
    the wrong type (a hand-edited or damaged file), before anything is loaded from it."""
    step = state.get("step")
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"{path} is damaged: its step is {str(step)[:40]!r}, not a whole number ≥ 0")
    if not isinstance(state.get("recipe"), dict):
        raise ValueError(f"{path} is damaged: its recipe is not a dictionary")
    for key, what in (("model", "model weights"), ("optimizer", "optimizer state")):
        if not isinstance(state.get(key), dict):
            raise ValueError(f"{path} is damaged: it has no {what} ('{key}')")
    if not all(isinstance(v, torch.Tensor) for v in state["model"].values()):
        raise ValueError(f"{path} is damaged: its model weights are not all tensors")
    if not isinstance(state.get("task") or {}, dict):
        raise ValueError(f"{path} is damaged: its task state is not a dictionary")
    rng = state.get("rng")
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8:
        raise ValueError(f"{path} is damaged: it has no random-generator state ('rng')")


def load_state(out: str | Path, warn: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The resumable state of the run in ``out``: ``checkpoint.pt``, or, when that is damaged or
    missing, the previous checkpoint (``warn`` gets one line saying so; default: stderr). The
    file used is in ``state["source"]``. One-line ``ValueError`` when neither is usable."""
    import sys

    out = Path(out)
    path, prev = out / CHECKPOINT, out / PREVIOUS
    if not path.is_file() and not prev.is_file():
        raise ValueError(f"nothing to resume: {path} does not exist")
    problem = None
    for p in (path, prev):
        if not p.is_file():
            continue
        try:
            state = read_state(p)
        except ValueError as exc:
            problem = problem or str(exc)
            continue
        if problem is not None or p != path:
            why = problem or f"{path} is missing"
            (warn or (lambda m: print(m, file=sys.stderr)))(
                f"warning: {why}; resuming from the previous checkpoint {p} "
                f"(step {int(state['step'])})")
        state["source"] = str(p)
        return state
    raise ValueError(problem)


def state_mismatch(own: dict[str, torch.Tensor], sd: dict[str, Any]) -> str | None:
    """What keeps ``sd`` from loading into a module whose state dict is ``own`` (missing and
    unexpected keys, other shapes, non-tensors), in one line; None when it fits."""
    missing = [k for k in own if k not in sd]
    unexpected = [k for k in sd if k not in own]
    odd = [k for k in own if k in sd and not isinstance(sd[k], torch.Tensor)]
    shapes = [f"{k} {tuple(sd[k].shape)}≠{tuple(own[k].shape)}" for k in own
              if k in sd and k not in odd and sd[k].shape != own[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (first: {', '.join(missing[:3])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (first: {', '.join(str(k)[:60] for k in unexpected[:3])})")
    if odd:
        parts.append(f"{len(odd)} not tensors (first: {', '.join(odd[:3])})")
    if shapes:
        parts.append(f"{len(shapes)} with other shapes (first: {', '.join(shapes[:2])})")
    return "keys " + "; ".join(parts) if parts else None
