"""``fit``: the whole life of a training run, once for every pipeline.

    resume? load the checkpoint (verified; the previous one when it is damaged) and merge its
            recipe with the options given (``resume_recipe``)
    new?    refuse a folder that holds a run unless ``overwrite``
    → validate the config → the torchrun environment and device → build the ``Task``
    → ``Trainer`` → restore → run → the task saves the model (rank 0) → its path.

A config is a dataclass with ``to_dict()``, ``from_dict(d)`` (a classmethod), ``validate()`` and
the fields ``out``, ``device``, ``amp`` (True, False or "auto": ``devices.resolve_amp``),
``compile``, ``resume`` and ``overwrite`` (``threads`` is used when present).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable

from .checkpoint import CHECKPOINT, PREVIOUS, load_state
from .metrics import METRICS
from .trainer import MODEL, Task, Trainer, resume_recipe

CONFIG = "config.json"
# the files that make a folder "a run": a new run there needs --resume or --overwrite
RUN_FILES = (METRICS, CHECKPOINT, MODEL, CONFIG)


def dist_env(device: str):
    """The torchrun environment when this process is one of several, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from .distributed import init_distributed

    return init_distributed(device)


def check_new_run(out: str | Path, overwrite: bool) -> None:
    """One-line ``ValueError`` when ``out`` already holds a run and ``overwrite`` is off."""
    out = Path(out)
    held = [n for n in RUN_FILES + (PREVIOUS,) if (out / n).exists()]
    if held and not overwrite:
        raise ValueError(f"{out} already holds a run ({', '.join(held)}): continue it with "
                         "--resume, or replace it with --overwrite")


def fit(cfg: Any, build: Callable[[Any, Any], Task], *, run_settings: Iterable[str],
        resume: bool = False, explicit: Iterable[str] | None = None, override: Iterable[str] = (),
        legacy: dict[str, Any] | None = None,
        refuse_finished: Callable[[Any], str] | None = None,
        progress: Callable | None = None, should_stop: Callable[[], bool] | None = None,
        show_bar: bool = True) -> Path:
    """Run ``cfg`` to the end and return ``<out>/model.safetensors``.

    ``build(cfg, device)`` makes the task (it may complete the config: the task's ``cfg`` is the
    recipe saved); ``run_settings`` are the keys that may change on resume; ``explicit`` the
    options the user set (None: every key of the config); ``legacy`` what a recipe saved before
    a key existed meant; ``refuse_finished(cfg)``, when given, is the error for resuming a run
    that has no steps left. ``progress`` receives ``engine.hooks.ProgressEvent``s."""
    import torch

    from .devices import resolve_amp, resolve_device

    out = Path(cfg.out)
    state = None
    if resume or cfg.resume:
        state = load_state(out)
        saved = {**(legacy or {}), **state["recipe"]}
        merged = resume_recipe(saved, cfg.to_dict(), mutable=run_settings, explicit=explicit,
                               override=override, source=state.get("source", out / CHECKPOINT))
        cfg = type(cfg).from_dict(merged)
    cfg.validate()
    if state is None and int(os.environ.get("RANK", "0")) == 0:
        # rank 0 alone: the other ranks may look only after it has started writing the run
        check_new_run(out, cfg.overwrite)
    env = dist_env(cfg.device)
    device = env.device if env is not None else resolve_device(cfg.device)
    if getattr(cfg, "threads", 0):
        torch.set_num_threads(cfg.threads)
    task = build(cfg, device)
    cfg = task.cfg if task.cfg is not None else cfg
    trainer = Trainer(task, out=out, recipe=cfg.to_dict(), device=device,
                      amp=resolve_amp(cfg.amp, device),
                      compile=cfg.compile, env=env, fresh=state is None)
    start = trainer.restore(state) if state is not None else 0
    if state is not None and start >= task.total_steps and refuse_finished is not None:
        raise ValueError(refuse_finished(cfg))
    result = trainer.run(start=start, progress=progress, should_stop=should_stop,
                         show_bar=show_bar)
    path = out / MODEL
    if trainer.is_main:
        task.save(path, result)
    return path
