"""One training loop under both pipelines (after Detectron2's ``engine``): a pipeline describes
its model, data and loss as a ``Task``; the ``Trainer`` owns everything else, once:

- seeding and exact resume: a task's batch is a pure function of (seed, step) and the
  checkpoint holds model, optimizer, grad scaler, RNG and step, so on CPU a resumed run ends
  bit-identical to an uninterrupted one;
- atomic, checksummed checkpoints (``checkpoint.pt``, weights-only pickle, sha256 inside; the
  one before kept as ``checkpoint.prev.pt`` and resumed from when the newest is damaged); stale
  temp files of a killed write (the engine's own names only) are removed at start; a checkpoint
  is written only after the next step's loss confirmed its weights are finite, so "the last
  good checkpoint" is true when training diverges;
- ``metrics.jsonl`` lines written (and flushed) before the checkpoint that claims their step,
  and cut back to the checkpoint's step on resume;
- a non-finite loss stops with a message naming the last checkpoint with finite weights (or
  saying there is none); cancel (``should_stop``) and Ctrl-C leave a resumable checkpoint;
- gate clipping for BIN-style gates (BIN paper Sec. 3.2), optional gradient-norm clipping, AMP
  policy (``engine.devices``), optional ``torch.compile``, channels_last on GPU, a tqdm bar, a
  progress callback receiving ``engine.hooks.ProgressEvent``;
- ``torchrun``: DistributedDataParallel with synchronised batch statistics (``engine.distributed``);
  every rank draws the same global batch and trains on its slice; rank 0 alone writes.

The loop is a step plus hooks (``engine.hooks``); ``engine.fit`` runs the whole lifecycle of a
run around it. On resume the recipe saved in the checkpoint wins: ``resume_recipe`` refuses a
conflicting option by name unless it is listed in ``override``.
"""
from __future__ import annotations

import contextlib
import copy
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

from .checkpoint import CHECKPOINT, PREVIOUS, load_state
from .devices import amp_dtype, grad_scaler
from .metrics import METRICS, read_metrics

if TYPE_CHECKING:
    from .hooks import HookBase, ProgressEvent

MODEL = "model.safetensors"
STATE_FORMAT = 1
__all__ = ["CHECKPOINT", "METRICS", "MODEL", "PREVIOUS", "Task", "Trainer", "TrainResult",
           "load_state", "read_metrics", "resume_recipe"]


class Task:
    """What a pipeline supplies. Subclasses set ``model``, ``optimizer``, ``total_steps`` and
    ``batch_size`` (the global batch) and implement ``batch`` and ``loss``; everything else has
    a default. ``engine.fit`` also calls ``save`` and reads ``cfg``."""

    name: str = "train"
    model: nn.Module
    optimizer: torch.optim.Optimizer
    total_steps: int
    batch_size: int
    log_every: int = 1  # steps per metrics.jsonl line (metrics are averaged over them)
    steps_per_epoch: int = 0  # for progress events (epoch counting); 0: no epochs
    checkpoint_every: int = 0  # steps between checkpoints (0: only at the end)
    clip_grad_norm: float = 0.0  # > 0: clip the global gradient norm to this before each step
    cfg: Any = None  # the config the task was built from (fit saves cfg.to_dict() as the recipe)

    def batch(self, step: int) -> tuple[Tensor, ...]:
        """The global batch of ``step`` (0-based) on the CPU: a pure function of (seed, step)."""
        raise NotImplementedError

    def loss(self, model: nn.Module, batch: tuple[Tensor, ...]) -> tuple[Tensor, dict[str, Tensor]]:
        """(scalar loss to minimise, metrics to log) for a batch already on the device."""
        raise NotImplementedError

    def lr_factor(self, step: int) -> float:
        """Learning-rate multiplier at ``step`` (applied to every group's base lr)."""
        return 1.0

    def evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        """Evaluation after ``step`` steps (``model`` is the bare module, in train mode on entry)."""
        return {}

    def should_evaluate(self, step: int) -> bool:
        return False

    def record(self, step: int) -> dict[str, Any]:
        """Extra fields of the metrics line at ``step`` (e.g. the epoch)."""
        return {}

    def progress_info(self, step: int, window: dict[str, float], evaluation: dict[str, float],
                      images_per_s: float) -> dict[str, Any]:
        """Older API, still honoured: a task that overrides this has its dict passed along as
        ``ProgressEvent.extra`` (the event itself carries step, metrics and evaluation)."""
        return {"step": step, "total": self.total_steps, **window, **evaluation,
                "images_per_s": images_per_s}

    def postfix(self, window: dict[str, float]) -> dict[str, str]:
        """tqdm postfix."""
        return {k: f"{v:.3g}" for k, v in list(window.items())[:3]}

    def extra_state(self) -> dict[str, Any]:
        """Plain data saved with the checkpoint (weights-only pickle: tensors, numbers, strings)."""
        return {}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        pass

    def hooks(self) -> list[HookBase]:
        """The task's hooks, run after the learning-rate schedule and before evaluation, metrics,
        progress and checkpointing. The default clips BIN gates; extend it with
        ``super().hooks() + [...]``."""
        from .hooks import GateClipping

        return [GateClipping()]

    def save(self, path: Path, result: TrainResult) -> None:
        """Write the trained model to ``path`` (``engine.fit`` calls it on rank 0 only)."""
        raise NotImplementedError(f"{type(self).__name__} does not implement save()")


@dataclass
class TrainResult:
    """How a run ended."""

    step: int
    total: int
    stopped: bool
    metrics: dict[str, float] = field(default_factory=dict)  # last logged window
    evaluation: dict[str, float] = field(default_factory=dict)  # last evaluation
    checkpoint: Path | None = None


# ---------------------------------------------------------------------------------- resume rules

def flag_name(key: str) -> str:
    return "--" + key.replace("_", "-")


def resume_recipe(saved: dict[str, Any], given: dict[str, Any], *, mutable: Iterable[str],
                  explicit: Iterable[str] | None = None, override: Iterable[str] = (),
                  source: str | Path = CHECKPOINT) -> dict[str, Any]:
    """The recipe to continue with: the checkpoint's, plus the ``mutable`` keys (run settings
    such as device or checkpoint cadence) and the ``override`` keys taken from ``given``.

    ``explicit`` is the set of keys the user set (the CLI passes the options given on the command
    line; ``None`` means every key of ``given`` counts). An explicit key whose value differs from
    the saved one and is neither mutable nor overridden is an error that names it."""
    mutable, override = set(mutable), set(override)
    unknown = override - set(saved) - set(given)
    if unknown:
        raise ValueError(f"--override: unknown option(s) {', '.join(sorted(unknown))}")
    keys = set(given) if explicit is None else set(explicit)
    out = dict(saved)
    for k in sorted(keys):
        if k not in given:
            continue
        new, old = _plain(given[k]), _plain(saved.get(k))
        if k in mutable or k in override:
            out[k] = given[k]
        elif new != old:
            raise ValueError(
                f"{flag_name(k)} {new!r} conflicts with the checkpoint's {old!r}: on resume the "
                f"recipe saved in {source} wins (leave {flag_name(k)} out, or add "
                f"'--override {k}' to change it)")
    for k in mutable | override:
        if k in given:
            out[k] = given[k]
    return out


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


# ---------------------------------------------------------------------------------- the loop

def _params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def unwrap(model: nn.Module) -> nn.Module:
    """The bare module under DDP and ``torch.compile`` wrappers."""
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


_unwrap = unwrap


def _clean_stale_temps(out: Path) -> None:
    """Remove the temp files a killed write of the engine left (``.NAME.XXXXXXXX.tmp`` for the
    run's own file names); nothing else, e.g. a user's ``.my-notes.tmp``, is touched."""
    from .io import temp_target

    own = {CHECKPOINT, PREVIOUS, METRICS, MODEL, "config.json"}
    for p in out.glob(".*.tmp"):
        name = temp_target(p.name)
        if name in own or (name and re.fullmatch(r"preview_\d+\.jpg", name)):
            p.unlink(missing_ok=True)


class Trainer:
    """Runs a ``Task`` to ``task.total_steps`` (see the module docstring): ``run_step`` is one
    optimizer step; the hooks (``engine.hooks``) do everything around it.

    Hooks read: ``step`` (steps done), ``total``, ``model`` (wrapped for DDP/compile), ``task``,
    ``window`` (metric means since the last metrics line), ``evaluation`` (this step's, or {}),
    ``images_per_s``, ``preview`` (set by a task hook for the progress event), ``outcome``
    (in ``after_train``: finished, stopped, interrupted or failed)."""

    def __init__(self, task: Task, *, out: str | Path, recipe: dict[str, Any],
                 device: torch.device, amp: bool = False, compile: bool = False,
                 checkpoint_every: int | None = None, env: Any = None,
                 clip_grad_norm: float | None = None, hooks: Sequence[HookBase] = (),
                 fresh: bool = False) -> None:
        """``checkpoint_every`` and ``clip_grad_norm`` default to the task's; ``hooks`` are
        added after the task's; ``fresh``: a new run replacing an old one in ``out`` (its
        checkpoints and model are removed before the first step)."""
        self.task, self.out, self.recipe = task, Path(out), recipe
        self.device, self.amp, self.compile = device, amp, compile
        self.checkpoint_every = (task.checkpoint_every if checkpoint_every is None
                                 else checkpoint_every)
        self.clip_grad_norm = task.clip_grad_norm if clip_grad_norm is None else clip_grad_norm
        self.env = env
        self.extra_hooks, self.fresh = list(hooks), fresh
        self.ckpt_path = self.out / CHECKPOINT
        self.metrics_path = self.out / METRICS
        self.scaler = grad_scaler(device, amp)
        self.good_step: int | None = None  # step of the newest checkpoint with finite weights
        self.checkpoint_trusted = False  # whether checkpoint.pt is this run's, verified
        self.restored = False
        self.metrics_writer = None
        for g in task.optimizer.param_groups:
            g.setdefault("base_lr", g["lr"])

    # -- state ---------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.env is None or self.env.is_main

    def snapshot(self) -> dict[str, Any]:
        """The resumable state after ``self.step`` steps (plain data and tensors, copied)."""
        model = unwrap(self.task.model)
        return {"format": STATE_FORMAT, "step": self.step, "recipe": self.recipe,
                "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "optimizer": copy.deepcopy(self.task.optimizer.state_dict()),
                "scaler": self.scaler.state_dict(), "rng": torch.get_rng_state(),
                "task": copy.deepcopy(self.task.extra_state())}

    def params_finite(self) -> bool:
        return _params_finite(unwrap(self.task.model))

    def restore(self, state: dict[str, Any]) -> int:
        """Load a ``load_state`` dict into the task; returns its step. A checkpoint that does
        not fit the task (other shapes or keys) is one ``ValueError`` line naming it."""
        from .checkpoint import state_mismatch

        source = state.get("source", self.ckpt_path)
        model = unwrap(self.task.model)
        why = state_mismatch(model.state_dict(), state["model"])
        if why:
            raise ValueError(f"{source} does not fit this run's network: {why}")
        model.load_state_dict(state["model"])
        try:
            self.task.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise ValueError(f"{source}: its optimizer state does not fit this run "
                             f"({first})") from None
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        self.task.load_extra_state(state.get("task") or {})
        self.good_step = int(state["step"])
        self.restored = True
        # resumed from checkpoint.prev.pt: the damaged checkpoint.pt is replaced, not kept
        self.checkpoint_trusted = Path(state.get("source", self.ckpt_path)).name == CHECKPOINT
        return int(state["step"])

    # -- the loop ------------------------------------------------------------------------------
    def _shard(self, batch: Sequence[Tensor]) -> list[Tensor]:
        if self.env is None or not self.env.enabled:
            return list(batch)
        from .distributed import shard_batch

        return [shard_batch(t, self.env) for t in batch]

    def _to_device(self, batch: Sequence[Tensor]) -> list[Tensor]:
        out = []
        for t in batch:
            t = t.to(self.device, non_blocking=True)
            if self.device.type == "cuda" and t.ndim == 4 and t.is_floating_point():
                t = t.contiguous(memory_format=torch.channels_last)
            out.append(t)
        return out

    def _mean_across(self, t: Tensor) -> Tensor:
        if self.env is None or not self.env.enabled:
            return t
        from .distributed import all_reduce_mean

        return all_reduce_mean(t, self.env)

    def build_hooks(self, progress: Callable[[ProgressEvent], None] | None,
                    show_bar: bool) -> list[HookBase]:
        """LR schedule, the task's hooks, evaluation, then (rank 0) metrics file and progress,
        any extra hooks, and the checkpointer last."""
        from .hooks import Checkpointer, Evaluation, LRSchedule, MetricsWriter, Progress

        hooks: list[HookBase] = [LRSchedule(), *self.task.hooks(), Evaluation()]
        if self.is_main:
            hooks += [MetricsWriter(), Progress(progress, show_bar)]
        return hooks + self.extra_hooks + [Checkpointer(self.checkpoint_every)]

    def run(self, *, start: int = 0, progress: Callable[[ProgressEvent], None] | None = None,
            should_stop: Callable[[], bool] | None = None, show_bar: bool = True) -> TrainResult:
        """Train from ``start`` (0, or the step ``restore`` returned) to ``task.total_steps``;
        ``ValueError`` at once if another process is training into the same folder."""
        from .io import folder_lock

        with folder_lock(self.out) if self.is_main else contextlib.nullcontext():
            return self._run(start, self.build_hooks(progress, show_bar), should_stop)

    def _prepare(self) -> None:
        """Rank 0, under the folder lock, before any hook: the folder, stale temps, and (a new
        run) the checkpoints and model of whatever run was there before."""
        self.out.mkdir(parents=True, exist_ok=True)
        _clean_stale_temps(self.out)
        if not self.restored:
            # a checkpoint.prev.pt left from another run must never be "the previous good one"
            gone = (PREVIOUS, CHECKPOINT, MODEL, "config.json") if self.fresh else (PREVIOUS,)
            for name in gone:
                (self.out / name).unlink(missing_ok=True)

    def _run(self, start: int, hooks: list[HookBase], should_stop: Callable[[], bool] | None
             ) -> TrainResult:
        self.step, self.total = start, self.task.total_steps
        self.window, self.n_window, self.last_window = {}, 0, {}
        self.evaluation, self.last_evaluation, self.evaluated = {}, {}, False
        self.preview, self.images_per_s, self.seen = None, 0.0, 0
        self.outcome = "failed"
        self.hooks = hooks
        if self.is_main:
            self._prepare()
        self.model = self._wrap(self.task.model)
        dtype = amp_dtype(self.device)
        # what this session computes in, per metrics line (a resumed run may differ)
        self.precision = str(dtype).removeprefix("torch.") if self.amp else "float32"
        self.t0 = time.perf_counter()
        stopped = False
        for h in hooks:
            h.trainer = self
        try:
            for h in hooks:
                h.before_train()
            self.model.train()
            while self.step < self.total:
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                self.run_step(dtype)
            self.outcome = "stopped" if stopped else "finished"
        except KeyboardInterrupt:
            self.outcome = "interrupted"  # Ctrl-C keeps every finished step: --resume
            raise
        finally:
            for h in reversed(hooks):
                h.after_train()
        return TrainResult(self.step, self.total, stopped, self.last_window or dict(self.window),
                           self.last_evaluation,
                           self.ckpt_path if self.good_step is not None else None)

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        if self.env is not None and self.env.enabled:
            from .distributed import prepare_model

            model = prepare_model(model, self.env)
        if self.compile:
            model = torch.compile(model)
        return model

    def run_step(self, dtype: torch.dtype) -> None:
        """One optimizer step with its hooks; ``ValueError`` naming the last good checkpoint
        when the loss is not finite."""
        task = self.task
        self.evaluated, self.evaluation, self.preview = False, {}, None
        for h in self.hooks:
            h.before_step()
        batch = self._to_device(self._shard(task.batch(self.step)))
        with torch.autocast(self.device.type, dtype=dtype, enabled=self.amp):
            loss, metrics = task.loss(self.model, batch)
        loss_all = self._mean_across(loss.detach().float())
        if not torch.isfinite(loss_all):
            raise ValueError(self._diverged_message(float(loss_all), self.step + 1))
        for h in self.hooks:
            h.after_loss()
        task.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.clip_grad_norm:
            self.scaler.unscale_(task.optimizer)
            torch.nn.utils.clip_grad_norm_(unwrap(self.model).parameters(), self.clip_grad_norm)
        self.scaler.step(task.optimizer)
        self.scaler.update()
        self.step += 1
        self.seen += batch[0].shape[0] * (self.env.world_size if self.env is not None
                                          and self.env.enabled else 1)
        vals = {k: float(self._mean_across(torch.as_tensor(v, dtype=torch.float32)))
                for k, v in metrics.items()}
        self.n_window += 1
        for k, v in vals.items():
            self.window[k] = self.window.get(k, 0.0) + (v - self.window.get(k, 0.0)) / self.n_window
        self.images_per_s = self.seen / max(time.perf_counter() - self.t0, 1e-9)
        for h in self.hooks:
            h.after_step()
        if self.step % task.log_every == 0 or self.step == self.total:
            self.last_window, self.window, self.n_window = dict(self.window), {}, 0

    def _diverged_message(self, value: float, step: int) -> str:
        if self.good_step is not None:
            kept = (f"{self.ckpt_path} holds the last finite weights (step {self.good_step}); "
                    "continue from it with --resume and a lower learning rate (--lr, via --override lr)")
        else:
            kept = "no checkpoint was written before it, so there is nothing to resume (try a lower --lr)"
        return f"loss became {value} at step {step}; training stopped: {kept}"
