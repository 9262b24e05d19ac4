"""Multi-process training under ``torchrun``: DistributedDataParallel over NCCL (CUDA) or gloo
(CPU), one node or many through torchrun's rendezvous, with batch statistics synchronised across
processes (``norms.sync_batch_stats``).

The contract with a training loop:

- ``env = init_distributed(device)`` once at start (a single-process env outside torchrun);
- every rank seeds identically and draws the same *global* batch of sample indices, then keeps
  ``shard_batch(indices, env)``, so the sequence of global batches equals the single-process one
  and a run on N processes follows the same trajectory as one process (up to float rounding);
- ``model = prepare_model(model, env)``; save ``unwrap(model).state_dict()`` on ``env.is_main``;
- ``all_reduce_mean`` for logged metrics, ``barrier`` around rank-0 file work, ``cleanup`` at the
  end.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

import norms

from .devices import resolve_device


@dataclass
class DistEnv:
    """Where this process sits: ``rank`` of ``world_size`` processes (``local_rank`` on its
    node), the device it trains on, and the process-group backend (None when single-process)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    backend: str | None

    @property
    def enabled(self) -> bool:
        """More than one process: gradients and batch statistics are synchronised."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0, the one process that writes checkpoints, metrics and progress."""
        return self.rank == 0


_ENV: DistEnv | None = None


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw.strip() == "":
        if default is None:
            raise ValueError(f"distributed training: environment variable {name} is not set "
                             "(start the command with torchrun)")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"distributed training: environment variable {name}={raw!r} is not an "
                         "integer") from None


def init_distributed(device: str | torch.device = "auto") -> DistEnv:
    """Join the process group that ``torchrun`` describes in the environment (``RANK``,
    ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``), or return a single-process
    env on ``resolve_device(device)`` when ``WORLD_SIZE`` is unset or 1.

    Under torchrun each process takes ``cuda:LOCAL_RANK`` with NCCL when ``device`` is ``auto``
    and CUDA is present or ``device`` is ``cuda``, and the CPU with gloo otherwise. Idempotent:
    a second call returns the same env. ``ValueError`` with one line for a setup that cannot work.
    """
    global _ENV
    if _ENV is not None and (not _ENV.enabled or dist.is_initialized()):
        return _ENV
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        _ENV = DistEnv(0, 1, 0, resolve_device(device), None)
        return _ENV
    rank = _env_int("RANK")
    local_rank = _env_int("LOCAL_RANK", rank)
    if not 0 <= rank < world:
        raise ValueError(f"distributed training: RANK={rank} is outside 0..{world - 1}")
    name = str(device).strip().lower() if device is not None else "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if name != "cuda":
            raise ValueError(f"--device {name} names one GPU, but under torchrun every process "
                             "takes cuda:LOCAL_RANK; pass --device cuda (or auto)")
        if not torch.cuda.is_available():
            raise ValueError("--device cuda requested under torchrun but CUDA is not available "
                             "here (use --device cpu for gloo on CPU)")
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ValueError(f"--device cuda: this node has {count} GPU(s) but torchrun started "
                             f"local rank {local_rank}; use --nproc_per_node {count} or fewer, or "
                             "--device cpu")
        dev, backend = torch.device("cuda", local_rank), "nccl"
        torch.cuda.set_device(dev)
    elif name == "cpu":
        dev, backend = torch.device("cpu"), "gloo"
    else:
        raise ValueError(f"--device {name}: distributed training runs on CUDA (NCCL) or on the "
                         "CPU (gloo); use --device cuda or cpu")
    for var in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(var):
            raise ValueError(f"distributed training: environment variable {var} is not set "
                             "(start the command with torchrun)")
    if not dist.is_initialized():
        kwargs: dict[str, Any] = {"device_id": dev} if backend == "nccl" else {}
        dist.init_process_group(backend, rank=rank, world_size=world, **kwargs)
    elif dist.get_world_size() != world or dist.get_rank() != rank:
        raise ValueError(f"distributed training: a process group of {dist.get_world_size()} "
                         f"processes already exists, but WORLD_SIZE={world}")
    _ENV = DistEnv(rank, world, local_rank, dev, dist.get_backend())
    return _ENV


def prepare_model(model: nn.Module, env: DistEnv, **ddp_kwargs: Any) -> nn.Module:
    """In a distributed env: move ``model`` to ``env.device``, synchronise its batch statistics
    across processes and wrap it in ``DistributedDataParallel`` (extra keyword arguments go to
    DDP). Otherwise return ``model`` unchanged. Build the optimizer after this call or before,
    as DDP keeps the same parameter objects."""
    if not env.enabled:
        return model
    model = model.to(env.device)
    norms.sync_batch_stats(model)
    if env.device.type == "cuda":
        ddp_kwargs.setdefault("device_ids", [env.device.index])
        ddp_kwargs.setdefault("output_device", env.device.index)
    return DistributedDataParallel(model, **ddp_kwargs)


def unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP and ``torch.compile`` wrappers, for state dicts and checkpoints
    (its keys carry no ``module.``/``_orig_mod.`` prefix)."""
    while True:
        if isinstance(model, DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod") and isinstance(model._orig_mod, nn.Module):
            model = model._orig_mod
        else:
            return model


def shard_batch(indices: Tensor, env: DistEnv) -> Tensor:
    """This rank's contiguous share of a global batch of sample indices (rank r gets slice r of
    ``world_size`` equal slices). Every rank must pass the same ``indices``."""
    if not env.enabled:
        return indices
    n = indices.shape[0]
    if n % env.world_size:
        raise ValueError(f"--batch-size {n} does not divide among {env.world_size} processes; "
                         f"use a multiple of {env.world_size} (it is the global batch size)")
    per = n // env.world_size
    return indices[env.rank * per:(env.rank + 1) * per]


def all_reduce_mean(value: float | Tensor, env: DistEnv) -> float | Tensor:
    """The mean of ``value`` over all processes (a float gives a float, a tensor a new tensor);
    ``value`` itself when single-process. Not differentiable: for metrics."""
    if not env.enabled:
        return value
    if isinstance(value, Tensor):
        t = value.detach().to(env.device, copy=True)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return (t / env.world_size).to(value.device)
    t = torch.tensor(float(value), dtype=torch.float64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t) / env.world_size


def broadcast_object(obj: Any, env: DistEnv, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank (e.g. a run directory or a resume decision made by
    rank 0); ``obj`` itself when single-process."""
    if not env.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=env.device if env.backend == "nccl" else None)
    return box[0]


def barrier(env: DistEnv) -> None:
    """Wait until every process gets here (no-op when single-process)."""
    if not env.enabled:
        return
    if env.backend == "nccl":
        dist.barrier(device_ids=[env.device.index])
    else:
        dist.barrier()


def cleanup(env: DistEnv | None = None) -> None:
    """Leave the process group (if this process joined one) so the process exits cleanly; the
    next ``init_distributed`` starts afresh."""
    global _ENV
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    _ENV = None
