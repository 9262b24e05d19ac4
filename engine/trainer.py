"""One training loop under both pipelines (after Detectron2's ``engine``): a pipeline describes
its model, data and loss as a ``Task``; the ``Trainer`` owns everything else, once:

- seeding and exact resume: a task's batch is a pure function of (seed, step) and the
  checkpoint holds model, optimizer, grad scaler, RNG and step, so on CPU a resumed run ends
  bit-identical to an uninterrupted one;
- atomic checkpoints (``checkpoint.pt``, weights-only pickle); stale ``.tmp`` files of a killed
  write are removed at start; a checkpoint is written only after the next step's loss confirmed
  its weights are finite, so "the last good checkpoint" is true when training diverges;
- ``metrics.jsonl`` lines written (and flushed) before the checkpoint that claims their step,
  and cut back to the checkpoint's step on resume;
- a non-finite loss stops with a message naming the last checkpoint with finite weights (or
  saying there is none); cancel (``should_stop``) and Ctrl-C leave a resumable checkpoint;
- gate clipping for BIN-style gates (BIN paper Sec. 3.2), AMP policy (``engine.devices``),
  optional ``torch.compile``, channels_last on GPU, a tqdm bar, a progress callback;
- ``torchrun``: DistributedDataParallel with synchronised batch statistics (``engine.distributed``);
  every rank draws the same global batch and trains on its slice; rank 0 alone writes.

On resume the recipe saved in the checkpoint wins: ``resume_recipe`` refuses a conflicting
option by name unless it is listed in ``override``.
"""
from __future__ import annotations

import contextlib
import copy
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import Tensor, nn

import norms

from .devices import amp_dtype, grad_scaler
from .io import load_torch, save_torch

CHECKPOINT = "checkpoint.pt"
METRICS = "metrics.jsonl"
STATE_FORMAT = 1


class Task:
    """What a pipeline supplies. Subclasses set ``model``, ``optimizer``, ``total_steps`` and
    ``batch_size`` (the global batch) and implement ``batch`` and ``loss``."""

    name: str = "train"
    model: nn.Module
    optimizer: torch.optim.Optimizer
    total_steps: int
    batch_size: int
    log_every: int = 1  # steps per metrics.jsonl line (metrics are averaged over them)

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
        """What the ``progress`` callback receives after ``step``."""
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


def _unwrap(model: nn.Module) -> nn.Module:
    while True:
        if hasattr(model, "module") and isinstance(model.module, nn.Module):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def read_metrics(path: str | Path, upto: int | None = None) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` (with ``step`` ≤ ``upto`` when given); a line cut by
    a crash ends the list."""
    path = Path(path)
    if not path.is_file():
        return []
    out = []
    lines = path.read_bytes().splitlines()
    for i, raw in enumerate(lines, 1):
        try:
            rec = json.loads(raw.decode("utf-8"))
            why = None if isinstance(rec, dict) else f"a JSON {type(rec).__name__}, not a record"
            step = rec.get("step", 0) if why is None else 0
            if why is None and (isinstance(step, bool) or not isinstance(step, (int, float))):
                why = f"its step is {str(step)[:40]!r}, not a number"
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
            if i == len(lines):
                break  # the last line, cut by a crash
            why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else "not valid JSON"
        if why is not None:  # a damaged line before others: never dropped silently on resume
            raise ValueError(f"{path} line {i} is damaged ({why}); repair or delete that line "
                             "to go on")
        if upto is None or step <= upto:
            out.append(rec)
    return out


def load_state(out: str | Path) -> dict[str, Any]:
    """The resumable state of the run in ``out`` (one-line error when there is none)."""
    path = Path(out) / CHECKPOINT
    if not path.is_file():
        raise ValueError(f"nothing to resume: {path} does not exist")
    state = load_torch(path)
    if not isinstance(state, dict) or "step" not in state or "recipe" not in state:
        raise ValueError(f"{path} is not a normlab training checkpoint")
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


class Trainer:
    """Runs a ``Task`` to ``task.total_steps`` (see the module docstring)."""

    def __init__(self, task: Task, *, out: str | Path, recipe: dict[str, Any],
                 device: torch.device, amp: bool = False, compile: bool = False,
                 checkpoint_every: int = 0, env: Any = None) -> None:
        self.task, self.out, self.recipe = task, Path(out), recipe
        self.device, self.amp, self.compile = device, amp, compile
        self.checkpoint_every = checkpoint_every
        self.env = env
        self.ckpt_path = self.out / CHECKPOINT
        self.metrics_path = self.out / METRICS
        self.scaler = grad_scaler(device, amp)
        self.good_step: int | None = None  # step of the newest checkpoint with finite weights
        norms.attach_gate_clipping(task.optimizer, _unwrap(task.model))
        for g in task.optimizer.param_groups:
            g.setdefault("base_lr", g["lr"])

    # -- state ---------------------------------------------------------------------------------
    @property
    def is_main(self) -> bool:
        return self.env is None or self.env.is_main

    def _snapshot(self, step: int) -> dict[str, Any]:
        model = _unwrap(self.task.model)
        return {"format": STATE_FORMAT, "step": step, "recipe": self.recipe,
                "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
                "optimizer": copy.deepcopy(self.task.optimizer.state_dict()),
                "scaler": self.scaler.state_dict(), "rng": torch.get_rng_state(),
                "task": copy.deepcopy(self.task.extra_state())}

    def _write(self, snap: dict[str, Any], metrics_file) -> None:
        if not self.is_main:
            return
        if metrics_file is not None:  # the lines this checkpoint claims are on disk first
            metrics_file.flush()
            os.fsync(metrics_file.fileno())
        save_torch(self.ckpt_path, snap)
        self.good_step = int(snap["step"])

    def restore(self, state: dict[str, Any]) -> int:
        """Load a ``load_state`` dict into the task; returns its step. A checkpoint that does
        not fit the task (other shapes or keys) is one ``ValueError`` line naming it."""
        from .checkpoint import state_mismatch

        model = _unwrap(self.task.model)
        why = state_mismatch(model.state_dict(), state["model"])
        if why:
            raise ValueError(f"{self.ckpt_path} does not fit this run's network: {why}")
        model.load_state_dict(state["model"])
        try:
            self.task.optimizer.load_state_dict(state["optimizer"])
        except (ValueError, KeyError, TypeError, RuntimeError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:120]
            raise ValueError(f"{self.ckpt_path}: its optimizer state does not fit this run "
                             f"({first})") from None
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        self.task.load_extra_state(state.get("task") or {})
        self.good_step = int(state["step"])
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

    def run(self, *, start: int = 0, progress: Callable[[dict], None] | None = None,
            should_stop: Callable[[], bool] | None = None, show_bar: bool = True) -> TrainResult:
        """Train from ``start`` (0, or the step ``restore`` returned) to ``task.total_steps``;
        ``ValueError`` at once if another process is training into the same folder."""
        from .io import folder_lock

        with folder_lock(self.out) if self.is_main else contextlib.nullcontext():
            return self._run(start, progress, should_stop, show_bar)

    def _run(self, start: int, progress: Callable[[dict], None] | None,
             should_stop: Callable[[], bool] | None, show_bar: bool) -> TrainResult:
        task, out = self.task, self.out
        total = task.total_steps
        prior_s = 0.0  # training wall seconds of the steps kept from earlier sessions (resume)
        if self.is_main:
            out.mkdir(parents=True, exist_ok=True)
            for stale in out.glob(".*.tmp"):  # left by a write that was killed mid-way
                stale.unlink(missing_ok=True)
            kept = read_metrics(self.metrics_path, start) if start else []
            from .io import write_text_atomic

            write_text_atomic(self.metrics_path, "".join(json.dumps(r) + "\n" for r in kept))
            if kept:
                prior_s = float(kept[-1].get("train_s", 0.0))
        model = task.model
        if self.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        if self.env is not None and self.env.enabled:
            from .distributed import prepare_model

            model = prepare_model(model, self.env)
        if self.compile:
            model = torch.compile(model)
        dtype = amp_dtype(self.device)
        # what this session computes in, per metrics line (a resumed run may differ)
        precision = str(dtype).removeprefix("torch.") if self.amp else "float32"
        bar = None
        if show_bar and self.is_main:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=start, desc=task.name, unit="step",
                       dynamic_ncols=True, mininterval=0.5)
        window: dict[str, float] = {}
        last_window: dict[str, float] = {}
        n_window = 0
        evaluation: dict[str, float] = {}
        pending: dict[str, Any] | None = None
        step, stopped, seen = start, False, 0
        t0 = time.perf_counter()
        mf = open(self.metrics_path, "a", buffering=1) if self.is_main else None
        model.train()
        try:
            while step < total:
                if should_stop is not None and should_stop():
                    stopped = True
                    break
                factor = task.lr_factor(step)
                for g in task.optimizer.param_groups:
                    g["lr"] = g["base_lr"] * factor
                batch = self._to_device(self._shard(task.batch(step)))
                with torch.autocast(self.device.type, dtype=dtype, enabled=self.amp):
                    loss, metrics = task.loss(model, batch)
                loss_all = self._mean_across(loss.detach().float())
                if not torch.isfinite(loss_all):
                    pending = None  # its weights produced this loss
                    raise ValueError(self._diverged_message(float(loss_all), step + 1))
                if pending is not None:  # the loss just confirmed the pending weights
                    self._write(pending, mf)
                    pending = None
                task.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.step(task.optimizer)
                self.scaler.update()
                step += 1
                seen += batch[0].shape[0] * (self.env.world_size if self.env is not None
                                              and self.env.enabled else 1)
                vals = {k: float(self._mean_across(torch.as_tensor(v, dtype=torch.float32)))
                        for k, v in metrics.items()}
                n_window += 1
                for k, v in vals.items():
                    window[k] = window.get(k, 0.0) + (v - window.get(k, 0.0)) / n_window
                ips = seen / max(time.perf_counter() - t0, 1e-9)
                do_eval = task.should_evaluate(step) or step == total
                if do_eval:
                    evaluation = self._evaluate(model, step)
                if step % task.log_every == 0 or step == total or do_eval:
                    rec = {"step": step, **task.record(step), **{k: round(v, 6) for k, v in window.items()},
                           **(evaluation if do_eval else {}), "images_per_s": round(ips, 2),
                           "time": round(time.time(), 3),
                           "train_s": round(prior_s + time.perf_counter() - t0, 1),
                           "precision": precision}
                    if mf is not None:
                        mf.write(json.dumps(rec) + "\n")
                if self.is_main:
                    info = task.progress_info(step, dict(window), evaluation if do_eval else {}, ips)
                    if bar is not None:
                        bar.update(1)
                        bar.set_postfix(task.postfix(window), refresh=False)
                    if progress is not None:
                        progress(info)
                if step % task.log_every == 0 or step == total:
                    last_window, window, n_window = dict(window), {}, 0
                if self.checkpoint_every and step % self.checkpoint_every == 0 and step < total:
                    pending = self._snapshot(step)
        except KeyboardInterrupt:
            self._final_checkpoint(step, mf)  # Ctrl-C keeps every finished step: --resume
            raise
        finally:
            if bar is not None:
                bar.close()
            if mf is not None and step < total and not stopped:
                mf.close()  # diverged or interrupted
        self._final_checkpoint(step, mf)
        if mf is not None:
            mf.close()
        return TrainResult(step, total, stopped, last_window or dict(window), evaluation,
                           self.ckpt_path if self.good_step is not None else None)

    def _evaluate(self, model: nn.Module, step: int) -> dict[str, float]:
        result: dict[str, float] = {}
        bare = _unwrap(model)
        if self.is_main:
            result = self.task.evaluate(bare, step)
            bare.train()
        if self.env is not None and self.env.enabled:
            from .distributed import barrier

            barrier(self.env)
        return result

    def _final_checkpoint(self, step: int, mf) -> None:
        if _params_finite(_unwrap(self.task.model)):
            self._write(self._snapshot(step), mf)

    def _diverged_message(self, value: float, step: int) -> str:
        if self.good_step is not None:
            kept = (f"{self.ckpt_path} holds the last finite weights (step {self.good_step}); "
                    "continue from it with --resume and a lower learning rate (--lr, via --override lr)")
        else:
            kept = "no checkpoint was written before it, so there is nothing to resume (try a lower --lr)"
        return f"loss became {value} at step {step}; training stopped: {kept}"
