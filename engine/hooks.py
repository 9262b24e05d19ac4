"""The training loop's hooks (after Detectron2's ``HookBase``): the ``Trainer`` runs one step
at a time and calls every hook around it, so checkpointing, the metrics file, the progress bar
and events, evaluation, the learning-rate schedule and gate clipping each live in one small
class. A task adds its own with ``Task.hooks()`` (which supplies gate clipping by default).

Order of the calls per step: ``before_step`` (all hooks, in order), the forward pass,
``after_loss`` (the step's loss is finite: the weights it was computed with are good), the
backward pass and the optimizer step, ``after_step`` (in order). ``before_train`` runs once in
order, ``after_train`` once in reverse order, however the run ends (``trainer.outcome``).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

import torch

import norms

from .checkpoint import save_state
from .metrics import read_metrics

if TYPE_CHECKING:
    from .trainer import Trainer


class HookBase:
    """A hook; ``self.trainer`` is set before ``before_train``. Override what you need."""

    trainer: "Trainer"

    def before_train(self) -> None:
        pass

    def before_step(self) -> None:
        pass

    def after_loss(self) -> None:
        pass

    def after_step(self) -> None:
        pass

    def after_train(self) -> None:
        pass


@dataclass(frozen=True)
class ProgressEvent:
    """What a progress callback receives after every step (the one shape for every task)."""

    step: int  # optimizer steps done (global, 1-based after the first step)
    total: int  # steps of the whole run
    metrics: dict[str, float]  # means over the current logging window (e.g. loss, train_acc)
    evaluation: dict[str, float]  # an evaluation after this step (e.g. test_acc/test), else {}
    images_per_s: float
    steps_per_epoch: int = 0  # 0: the task does not count epochs
    preview: Any = None  # an image of the model's output, when the task made one at this step
    extra: dict[str, Any] = field(default_factory=dict)  # a task's own progress_info()

    @property
    def fraction(self) -> float:
        return self.step / max(self.total, 1)

    @property
    def epoch(self) -> int:
        """The 1-based epoch this step belongs to (1 without epochs)."""
        return (self.step - 1) // self.steps_per_epoch + 1 if self.steps_per_epoch else 1

    @property
    def epochs(self) -> int:
        return -(-self.total // self.steps_per_epoch) if self.steps_per_epoch else 1

    @property
    def step_in_epoch(self) -> int:
        """1-based step within its epoch (the global step without epochs)."""
        return (self.step - 1) % self.steps_per_epoch + 1 if self.steps_per_epoch else self.step


class LRSchedule(HookBase):
    """Every group's lr is its ``base_lr`` × ``task.lr_factor(step)`` before each step."""

    def before_train(self) -> None:
        for g in self.trainer.task.optimizer.param_groups:
            g.setdefault("base_lr", g["lr"])

    def before_step(self) -> None:
        t = self.trainer
        factor = t.task.lr_factor(t.step)
        for g in t.task.optimizer.param_groups:
            g["lr"] = g["base_lr"] * factor


class GateClipping(HookBase):
    """BIN gates clipped to [0, 1] after every optimizer step (BIN paper Sec. 3.2), through an
    optimizer post-hook (``norms.attach_gate_clipping``), so even a skipped AMP step is right."""

    def __init__(self) -> None:
        self.handle = None

    def before_train(self) -> None:
        from .trainer import unwrap

        self.handle = norms.attach_gate_clipping(self.trainer.task.optimizer,
                                                 unwrap(self.trainer.task.model))

    def after_train(self) -> None:
        if self.handle is not None:
            self.handle.remove()
            self.handle = None


class Evaluation(HookBase):
    """``task.evaluate`` on rank 0 when ``task.should_evaluate(step)`` and after the last step
    (the other ranks wait); the result is ``trainer.evaluation`` for this step's hooks."""

    def after_step(self) -> None:
        t = self.trainer
        t.evaluation = {}
        if not (t.task.should_evaluate(t.step) or t.step == t.total):
            return
        t.evaluated = True
        result: dict[str, float] = {}
        from .trainer import unwrap

        bare = unwrap(t.model)
        if t.is_main:
            result = t.task.evaluate(bare, t.step)
            bare.train()
        if t.env is not None and t.env.enabled:
            from .distributed import barrier

            barrier(t.env)
        t.evaluation = t.last_evaluation = result


class MetricsWriter(HookBase):
    """``metrics.jsonl`` (rank 0): one line per ``task.log_every`` steps, at evaluations and at
    the end; on start the file is cut back to the resumed step."""

    def __init__(self) -> None:
        self.file = None
        self.prior_s = 0.0  # training seconds of the steps kept from earlier sessions

    def before_train(self) -> None:
        t = self.trainer
        from .io import write_text_atomic

        kept = read_metrics(t.metrics_path, t.step) if t.step else []
        write_text_atomic(t.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
        if kept:
            self.prior_s = float(kept[-1].get("train_s", 0.0))
        self.file = open(t.metrics_path, "a", buffering=1)
        t.metrics_writer = self

    def after_step(self) -> None:
        t = self.trainer
        if not (t.step % t.task.log_every == 0 or t.step == t.total or t.evaluated):
            return
        rec = {"step": t.step, **t.task.record(t.step),
               **{k: round(v, 6) for k, v in t.window.items()}, **t.evaluation,
               "images_per_s": round(t.images_per_s, 2), "time": round(time.time(), 3),
               "train_s": round(self.prior_s + time.perf_counter() - t.t0, 1),
               "precision": t.precision}
        self.file.write(json.dumps(rec) + "\n")

    def flush(self) -> None:
        """The lines so far on the disk (before a checkpoint claims their step)."""
        import os

        if self.file is not None:
            self.file.flush()
            os.fsync(self.file.fileno())

    def after_train(self) -> None:
        if self.file is not None:
            self.file.close()
            self.file = None
        self.trainer.metrics_writer = None


class Progress(HookBase):
    """A tqdm bar and the ``progress`` callback (rank 0), one ``ProgressEvent`` per step."""

    def __init__(self, callback: Callable[[ProgressEvent], None] | None = None,
                 show_bar: bool = True) -> None:
        self.callback, self.show_bar, self.bar = callback, show_bar, None

    def before_train(self) -> None:
        t = self.trainer
        if self.show_bar:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=t.total, initial=t.step, desc=t.task.name, unit="step",
                            dynamic_ncols=True, mininterval=0.5)

    def after_step(self) -> None:
        t = self.trainer
        from .trainer import Task

        extra = {}
        if type(t.task).progress_info is not Task.progress_info:  # a task's own dict (older API)
            extra = t.task.progress_info(t.step, dict(t.window), t.evaluation, t.images_per_s)
        event = ProgressEvent(t.step, t.total, dict(t.window), dict(t.evaluation),
                              t.images_per_s, int(getattr(t.task, "steps_per_epoch", 0) or 0),
                              t.preview, extra)
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(t.task.postfix(t.window), refresh=False)
        if self.callback is not None:
            self.callback(event)

    def after_train(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Checkpointer(HookBase):
    """``checkpoint.pt`` every ``every`` steps and at the end (rank 0 writes). A checkpoint is
    taken after its step but written only once the next step's loss confirmed its weights
    finite, so the file is always "the last good weights"; the metrics lines it claims are on
    the disk first. The previous checkpoint is kept as ``checkpoint.prev.pt``."""

    FINAL_OUTCOMES = ("finished", "stopped", "interrupted")

    def __init__(self, every: int = 0) -> None:
        self.every = every
        self.pending: dict[str, Any] | None = None

    def after_loss(self) -> None:
        if self.pending is not None:
            self.write(self.pending)
            self.pending = None

    def after_step(self) -> None:
        t = self.trainer
        if self.every and t.step % self.every == 0 and t.step < t.total:
            self.pending = t.snapshot()

    def after_train(self) -> None:
        t = self.trainer
        self.pending = None
        if t.outcome in self.FINAL_OUTCOMES and t.params_finite():
            self.write(t.snapshot())

    def write(self, snap: dict[str, Any]) -> None:
        t = self.trainer
        if not t.is_main:
            return
        if t.metrics_writer is not None:
            t.metrics_writer.flush()
        save_state(t.ckpt_path, snap, keep_previous=t.checkpoint_trusted)
        t.checkpoint_trusted = True
        t.good_step = int(snap["step"])
