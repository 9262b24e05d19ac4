"""Batch statistics synchronised across processes (``nn.SyncBatchNorm`` semantics) for every norm
that uses them: ``bn`` (and ``IBN``'s BN half), ``bn_in``, ``bin``, ``sn``, and plain
``torch.nn.BatchNorm2d``.

Every one of them is a per-(n, c) affine map whose BN part needs only the per-channel batch mean
and variance, and those follow from the per-plane statistics the fused layers already compute
(``functional.plane_stats``). So a synchronised layer all-reduces one small float64 tensor per
forward, the per-channel sums

    [N·HW,  Σ_n μ_nc·HW,  Σ_n (σ²_nc + μ²_nc)·HW]          (3×C, summed over the group)

and takes ``μ_c = S₁/count``, ``σ²_c = S₂/count − μ_c²`` (the same algebra as
``batch_stats_from_planes``, over the global batch). The all-reduce is an autograd Function whose
backward all-reduces the incoming gradient, so each rank's statistics receive the gradient of
every rank's loss and DDP's averaged weight gradients equal those of one process that sees the
whole batch (as ``SyncBatchNorm``). ``nn.SyncBatchNorm`` itself needs CUDA; this path runs on
CPU/gloo and CUDA/NCCL alike.

Activation converts layers in place, like ``nn.SyncBatchNorm.convert_sync_batchnorm`` but
reversible and without copying: each layer's class becomes a ``Sync…`` subclass (same parameters,
buffers and state-dict keys; ``isinstance`` checks still hold) whose training-mode forward takes
the synchronised path. Eval mode, and any forward while ``torch.distributed`` is not initialised
or the group has one process, run the layer's own forward unchanged.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .functional import _f32, bin_coefficients, plane_affine, update_running_stats_
from .layers import (
    BatchInstanceNorm2d,
    BatchNorm2d,
    BNIN2d,
    SwitchableNorm2d,
    _ema_factor,
    _RunningStatsNorm,
    check_nchw,
    sn_coefficients,
)

CoeffFn = Callable[..., tuple[Tensor, Tensor]]


def group_size(group: dist.ProcessGroup | None = None) -> int:
    """Number of processes in ``group`` (default: the world); 1 when torch.distributed is not
    initialised."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    return dist.get_world_size(group)


class _AllReduceSum(torch.autograd.Function):
    """Σ over the process group of a per-rank tensor. Backward sums the incoming gradients the
    same way: the total feeds every rank's loss, so each rank's share gets all of them.

    ``total`` (from an earlier forward over the same inputs) is returned instead of reducing again:
    ``PlaneAffine``'s backward re-runs the coefficient function to differentiate it, and that
    re-run must not start a second forward all-reduce.
    """

    @staticmethod
    def forward(ctx, local: Tensor, group, total: Tensor | None):
        ctx.group = group
        if total is not None:
            return total.clone()
        out = local.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    @staticmethod
    def backward(ctx, grad: Tensor):
        g = grad.contiguous().clone()
        dist.all_reduce(g, op=dist.ReduceOp.SUM, group=ctx.group)
        return g, None, None


class SyncedBatchStats:
    """Wraps a coefficient function ``f(mean_nc, var_nc, *params, bn_mean, bn_var) -> (a, b)``
    so that it is called with the batch statistics of the whole process group.

    One instance serves one forward (it keeps that forward's global sums for the backward and for
    the running-statistics update). It has no closed-form ``vjp``: ``PlaneAffine`` differentiates
    it with autograd, through the all-reduce.
    """

    def __init__(self, coeff_fn: CoeffFn, group: dist.ProcessGroup | None, hw: int) -> None:
        self.coeff_fn = coeff_fn
        self.group = group
        self.hw = hw
        self.totals: Tensor | None = None  # 3×C float64: count, Σ μ·HW, Σ (σ²+μ²)·HW

    def batch_stats(self, mean_nc: Tensor, var_nc: Tensor) -> tuple[Tensor, Tensor]:
        """Global biased per-channel mean and variance (C each) from this rank's N×C planes."""
        # float64 for the sums: counts over many ranks stay exact and E[x²] − μ² loses less.
        m, v = mean_nc.double(), var_nc.double()
        n = m.shape[0]
        local = torch.stack((torch.full_like(m[0], float(n * self.hw)),
                             m.sum(0) * self.hw, (v + m.square()).sum(0) * self.hw))  # 3×C
        total = _AllReduceSum.apply(local, self.group, self.totals)
        if self.totals is None:
            self.totals = total.detach()
        count, s1, s2 = total.unbind(0)
        mean = s1 / count
        var = (s2 / count - mean.square()).clamp_min(0.0)
        return mean.to(mean_nc.dtype), var.to(mean_nc.dtype)

    def __call__(self, mean_nc: Tensor, var_nc: Tensor, *params: Tensor) -> tuple[Tensor, Tensor]:
        bn_mean, bn_var = self.batch_stats(mean_nc, var_nc)
        return self.coeff_fn(mean_nc, var_nc, *params, bn_mean, bn_var)

    def running_update(self) -> tuple[int, tuple[Tensor, Tensor]]:
        """(global count, (mean, biased variance)) of the last forward, for the running buffers."""
        if self.totals is None:
            raise RuntimeError("SyncedBatchStats.running_update called before a forward")
        count, s1, s2 = self.totals.unbind(0)
        mean = s1 / count
        var = (s2 / count - mean.square()).clamp_min(0.0)
        return int(round(float(count[0]))), (mean.float(), var.float())


def bn_coefficients(mean_nc: Tensor, var_nc: Tensor, *params: Tensor, eps: float = 1e-5,
                    has_weight: bool = True, has_bias: bool = True) -> tuple[Tensor, Tensor]:
    """Batch norm (Ioffe & Szegedy 2015, Alg. 1) as a per-plane affine map, N×C each:
    ``a = γ/√(σ²_c + ε)``, ``b = β − μ_c·a``. ``params`` = ``(γ, β, μ_c, σ²_c)``, leaving out γ
    and/or β when the layer has none (``has_weight``/``has_bias``)."""
    *affine, bn_mean, bn_var = params
    a = torch.rsqrt(_f32(bn_var) + eps)  # C
    if has_weight:
        a = _f32(affine[0]) * a
    b = -_f32(bn_mean) * a
    if has_bias:
        b = b + _f32(affine[-1])
    n = mean_nc.shape[0]
    return a.expand(n, -1).contiguous(), b.expand(n, -1).contiguous()


class _GroupRef:
    """Holds the process group on a layer; copies of the model share it (a ProcessGroup cannot be
    deep-copied, and an EMA or snapshot copy must sync over the same group)."""

    def __init__(self, group: dist.ProcessGroup | None) -> None:
        self.group = group

    def __deepcopy__(self, memo) -> "_GroupRef":
        return self


def _sync_plane_forward(layer: nn.Module, x: Tensor, coeff_fn: CoeffFn,
                        params: tuple[Tensor, ...], track: bool) -> Tensor:
    """Training forward with global batch statistics; updates the running buffers if ``track``."""
    factor = _ema_factor(layer) if track else 0.0
    synced = SyncedBatchStats(coeff_fn, layer._sync_ref.group, x.shape[2] * x.shape[3])
    y = plane_affine(x, synced, *params)[0]  # N×C×H×W
    if track:
        count, stats = synced.running_update()
        update_running_stats_(layer.running_mean, layer.running_var, None, None, count, factor,
                              batch_stats=stats)
    return y


class _SyncMixin:
    """Holds the process group; ``_sync_active`` says whether this forward takes the synced path."""

    _sync_ref: _GroupRef = _GroupRef(None)

    def _sync_active(self) -> bool:
        return self.training and group_size(self._sync_ref.group) > 1


class _SyncBatchNormMixin(_SyncMixin):
    def forward(self, x: Tensor) -> Tensor:  # N×C×H×W -> N×C×H×W
        if not self._sync_active():
            return super().forward(x)
        check_nchw(self, x, self.num_features, need_batch=True)
        # conditional norms strip γ, β (set to None) from the BN they wrap
        params = tuple(p for p in (self.weight, self.bias) if p is not None)
        coeff = functools.partial(bn_coefficients, eps=self.eps, has_weight=self.weight is not None,
                                  has_bias=self.bias is not None)
        track = self.track_running_stats and self.running_mean is not None
        return _sync_plane_forward(self, x, coeff, params, track)


class SyncBatchNorm2d(_SyncBatchNormMixin, BatchNorm2d):
    """``norms.BatchNorm2d`` with batch statistics over the process group in training."""


class SyncTorchBatchNorm2d(_SyncBatchNormMixin, nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` with batch statistics over the process group in training (on CPU
    and GPU, unlike ``nn.SyncBatchNorm``)."""


# BIN, BN+IN and SN: the synced path replaces the layers' own-statistics forward
# (``_forward_own``), which both ``forward`` and ``forward_affine`` (per-sample γ, β, ρ of the
# conditional norms) reach after their input checks.

class _SyncBINMixin(_SyncMixin):
    def _forward_own(self, x: Tensor, weight: Tensor, bias: Tensor, gate: Tensor) -> Tensor:
        if not self._sync_active():
            return super()._forward_own(x, weight, bias, gate)
        coeff = functools.partial(bin_coefficients, eps=self.eps)
        return _sync_plane_forward(self, x, coeff, (weight, bias, gate), True)


class SyncBatchInstanceNorm2d(_SyncBINMixin, BatchInstanceNorm2d):
    """BIN whose BN branch uses batch statistics over the process group in training."""


class SyncBNIN2d(_SyncBINMixin, BNIN2d):
    """BN+IN whose BN branch uses batch statistics over the process group in training."""


class SyncSwitchableNorm2d(_SyncMixin, SwitchableNorm2d):
    """Switchable Norm whose BN statistics come from the process group's batch in training."""

    def _forward_own(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        if not self._sync_active():
            return super()._forward_own(x, weight, bias)
        coeff = functools.partial(sn_coefficients, eps=self.eps)
        params = (weight, bias, self.mean_weight, self.var_weight)
        return _sync_plane_forward(self, x, coeff, params, True)


# Exact layer type → its synchronised subclass (a subclass of a listed type is not listed: its
# forward may differ, so it is refused rather than silently synchronised with the wrong formula).
_SYNCED: dict[type[nn.Module], type[nn.Module]] = {
    BatchNorm2d: SyncBatchNorm2d,
    nn.BatchNorm2d: SyncTorchBatchNorm2d,
    BatchInstanceNorm2d: SyncBatchInstanceNorm2d,
    BNIN2d: SyncBNIN2d,
    SwitchableNorm2d: SyncSwitchableNorm2d,
}
_UNSYNCED = {v: k for k, v in _SYNCED.items()}


def _uses_batch_stats(m: nn.Module) -> bool:
    return isinstance(m, (nn.modules.batchnorm._BatchNorm, _RunningStatsNorm))


def sync_batch_stats(model: nn.Module, group: dist.ProcessGroup | None = None) -> nn.Module:
    """Make every layer with batch statistics in ``model`` (bn, ibn's BN half, bn_in, bin, sn,
    torch's BatchNorm2d) normalise with the statistics of the whole process-group batch in
    training, gradients included; running statistics get the global mean and unbiased variance.

    In place; returns ``model``. Does nothing when torch.distributed is not initialised or the
    group has one process. ``ValueError`` for a batch-statistics layer this cannot synchronise.
    """
    if group_size(group) <= 1:
        return model
    for name, m in model.named_modules():  # refuse before changing anything
        t = type(m)
        if (_uses_batch_stats(m) and t not in _SYNCED and t not in _UNSYNCED
                and not isinstance(m, nn.SyncBatchNorm)):
            raise ValueError(f"cannot synchronise the batch statistics of layer {name!r} "
                             f"({t.__name__}) across processes; synchronised layers: "
                             f"{', '.join(k.__name__ for k in _SYNCED)}")
    for m in model.modules():
        if type(m) in _SYNCED:
            m.__class__ = _SYNCED[type(m)]
        if type(m) in _UNSYNCED:
            m._sync_ref = _GroupRef(group)
    return model


def unsync_batch_stats(model: nn.Module) -> nn.Module:
    """Undo ``sync_batch_stats``: every layer gets its own class and per-process statistics back.
    In place; returns ``model``."""
    for m in model.modules():
        if type(m) in _UNSYNCED:
            m.__class__ = _UNSYNCED[type(m)]
            m.__dict__.pop("_sync_ref", None)
    return model


def batch_stats_synced(model: nn.Module) -> bool:
    """True when some layer of ``model`` has been switched to synchronised batch statistics."""
    return any(type(m) in _UNSYNCED for m in model.modules())
