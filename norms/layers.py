"""Normalization layers for N×C×H×W activations. Every layer takes ``num_channels`` first.

- ``BatchNorm2d`` (bn), ``InstanceNorm2d`` (in): the torch layers with input checks that name the
  layer and the shapes.
- ``BatchInstanceNorm2d`` (bin): Nam & Kim, "Batch-Instance Normalization for Adaptively
  Style-Invariant Neural Networks", NeurIPS 2018, eq. (3), fused (see ``functional``).
- ``BNIN2d`` (bn_in): the same with ρ fixed at 0.5, the paper's naive BN+IN ensemble.
- ``IBN`` (ibn): Pan et al., "Two at Once: Enhancing Learning and Generalization Capacities via
  IBN-Net", ECCV 2018: IN on part of the channels, BN on the rest, official key layout.
- ``GroupNorm2d`` (gn), ``GroupNorm1`` (ln: layer norm as GN with one group, over C×H×W),
  ``SwitchableNorm2d`` (sn, Luo et al. 2018).

Layers with per-instance statistics derive from ``statistics.InstanceStatsNorm`` (where their
statistics come from: own input, captured, streamed). Layers with affine parameters also have
``forward_affine(x, weight, bias[, gate])``: the same forward with γ, β (and ρ) given, of shape
C or N×C (one row per sample), which is what the conditional norms (``conditional.py``) call.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .functional import (
    _f32,
    apply_planes,
    batch_instance_norm,
    batch_stats_from_planes,
    bin_coefficients,
    instance_coefficients,
    per_sample_affine,
    plane_affine,
    plane_stats,
    update_running_stats_,
)
from .statistics import InstanceStats, InstanceStatsNorm


def check_nchw(layer: nn.Module, x: Tensor, num_channels: int, *, need_batch: bool = False,
               need_spatial: bool = False) -> None:
    """Raise a ``ValueError`` naming ``layer`` and the shapes when ``x`` does not fit it.

    need_batch: batch statistics are computed (more than one value per channel over N×H×W).
    need_spatial: instance statistics are computed (more than one value per plane over H×W).
    """
    name = f"{type(layer).__name__}({num_channels})"
    if x.dim() != 4:
        raise ValueError(
            f"{name}: expected a 4-D N×C×H×W input, got a {x.dim()}-D tensor of shape "
            f"{tuple(x.shape)}"
        )
    if x.shape[1] != num_channels:
        raise ValueError(
            f"{name}: input has {x.shape[1]} channels (shape {tuple(x.shape)}), the layer was "
            f"built for {num_channels}"
        )
    if need_spatial and x.shape[2] * x.shape[3] <= 1:
        raise ValueError(
            f"{name}: instance statistics need more than one spatial position, got input of "
            f"shape {tuple(x.shape)}"
        )
    if need_batch and x.shape[0] * x.shape[2] * x.shape[3] <= 1:
        raise ValueError(
            f"{name}: training needs more than one value per channel for batch statistics, got "
            f"input of shape {tuple(x.shape)}; use a larger batch or call .eval()"
        )


def _ema_factor(module: nn.Module) -> float:
    """BatchNorm's running-average factor: momentum, or 1/num_batches when momentum is None."""
    module.num_batches_tracked.add_(1)
    if module.momentum is None:
        return 1.0 / float(module.num_batches_tracked)
    return module.momentum


class BatchNorm2d(nn.BatchNorm2d):
    """``torch.nn.BatchNorm2d`` (running statistics, momentum, eval mode) with clear input checks."""

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, **kw) -> None:
        super().__init__(num_channels, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, **kw)

    def forward(self, x: Tensor) -> Tensor:  # N×C×H×W -> N×C×H×W
        check_nchw(self, x, self.num_features,
                   need_batch=self.training or self.running_mean is None)
        return super().forward(x)


class InstanceNorm2d(InstanceStatsNorm, nn.InstanceNorm2d):
    """Instance norm with affine parameters; per-instance statistics in train and eval.

    No running statistics, so its state dict is ``weight``/``bias`` only, as in pytorch/examples'
    style networks and the IN half of IBN-Net.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True, **kw) -> None:
        kw.setdefault("track_running_stats", False)
        super().__init__(num_channels, eps=eps, affine=affine, **kw)

    def forward(self, x: Tensor) -> Tensor:  # N×C×H×W -> N×C×H×W
        return self.forward_affine(x, self.weight, self.bias)

    def forward_affine(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        """``forward`` with γ, β given (C or N×C); N×C×H×W -> N×C×H×W."""
        check_nchw(self, x, self.num_features, need_spatial=True)
        return self._dispatch(x, {"weight": weight, "bias": bias})

    def uses_instance_stats(self) -> bool:
        return self.training or not self.track_running_stats

    def _forward_own(self, x: Tensor, weight: Tensor | None = None,
                     bias: Tensor | None = None) -> Tensor:
        args = (self.running_mean, self.running_var)
        flags = (self.training or not self.track_running_stats,
                 self.momentum if self.momentum is not None else 0.0, self.eps)
        if (weight is not None and weight.dim() > 1) or (bias is not None and bias.dim() > 1):
            return per_sample_affine(F.instance_norm(x, *args, None, None, *flags), weight, bias)
        return F.instance_norm(x, *args, weight, bias, *flags)  # as nn.InstanceNorm2d

    def instance_stats(self, x: Tensor) -> InstanceStats:
        var, mean = plane_stats(x)  # N×C each
        return InstanceStats(mean, var)

    def normalize_with_stats(self, x: Tensor, stats: InstanceStats, weight: Tensor | None = None,
                             bias: Tensor | None = None) -> Tensor:
        a, b = instance_coefficients(stats.mean, stats.var, weight, bias, eps=self.eps)
        return apply_planes(x, a, b)


class _RunningStatsNorm(nn.Module):
    """Per-channel affine ``weight``/``bias`` and BatchNorm2d's running-statistics buffers (same
    names, same update rule), for the norms that mix batch statistics with others."""

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__()
        self.num_features = num_channels
        self.eps = eps
        self.momentum = momentum
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.register_buffer("running_mean", torch.zeros(num_channels))
        self.register_buffer("running_var", torch.ones(num_channels))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def reset_running_stats(self) -> None:
        self.running_mean.zero_()
        self.running_var.fill_(1.0)
        self.num_batches_tracked.zero_()

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}"


class BatchInstanceNorm2d(InstanceStatsNorm, _RunningStatsNorm):
    """Batch-Instance Normalization, Nam & Kim 2018, eq. (3):

        y = (ρ·x̂_BN + (1−ρ)·x̂_IN)·γ + β,   ρ ∈ [0, 1] per channel, initialised to 1.

    The BN branch keeps running statistics exactly as ``BatchNorm2d`` does and uses them in eval;
    the IN branch always uses per-instance statistics. ρ (``gate``) must be clipped to [0, 1]
    after every optimizer step and trained with a larger learning rate and no weight decay: use
    ``norms.param_groups`` and ``norms.attach_gate_clipping``.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 gate_init: float = 1.0) -> None:
        super().__init__(num_channels, eps=eps, momentum=momentum)
        self.gate = nn.Parameter(torch.full((num_channels,), float(gate_init)))

    def forward(self, x: Tensor) -> Tensor:  # N×C×H×W -> N×C×H×W
        return self.forward_affine(x, self.weight, self.bias, self.gate)

    def forward_affine(self, x: Tensor, weight: Tensor, bias: Tensor,
                       gate: Tensor | None = None) -> Tensor:
        """``forward`` with γ, β, ρ given (C or N×C; ρ defaults to the layer's own, e.g. BN+IN's
        fixed 0.5); N×C×H×W -> N×C×H×W."""
        check_nchw(self, x, self.num_features, need_batch=self.training, need_spatial=True)
        gate = self.gate if gate is None else gate
        return self._dispatch(x, {"weight": weight, "bias": bias, "gate": gate})

    def _forward_own(self, x: Tensor, weight: Tensor, bias: Tensor, gate: Tensor) -> Tensor:
        factor = _ema_factor(self) if self.training else 0.0
        return batch_instance_norm(x, weight, bias, gate, self.running_mean, self.running_var,
                                   self.training, factor, self.eps)

    def instance_stats(self, x: Tensor) -> InstanceStats:
        var, mean = plane_stats(x)  # N×C each
        return InstanceStats(mean, var)

    def normalize_with_stats(self, x: Tensor, stats: InstanceStats, weight: Tensor, bias: Tensor,
                             gate: Tensor) -> Tensor:
        # eval only: the BN branch uses the running statistics, as the default eval path does
        a, b = bin_coefficients(stats.mean, stats.var, weight, bias, gate, self.running_mean,
                                self.running_var, eps=self.eps)
        return apply_planes(x, a, b)


class BNIN2d(BatchInstanceNorm2d):
    """BN+IN: the BIN paper's naive ensemble, eq. (3) with ρ fixed at 0.5 (a buffer)."""

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(num_channels, eps=eps, momentum=momentum)
        del self.gate
        self.register_buffer("gate", torch.full((num_channels,), 0.5))


class IBN(nn.Module):
    """IBN-Net's split layer: ``InstanceNorm2d(affine=True)`` on ``int(C·ratio)`` channels
    (submodule ``IN``), ``BatchNorm2d`` on the rest (``BN``), concatenated back.

    ``bn_first=True`` is the DenseNet-IBN order: BN on the first ``int(C·(1−ratio))`` channels,
    IN on the remaining ones (ratio 0.4 there).
    """

    def __init__(self, num_channels: int, ratio: float = 0.5, bn_first: bool = False) -> None:
        super().__init__()
        if not 0.0 < ratio < 1.0:
            raise ValueError(f"IBN({num_channels}): ratio must be in (0, 1), got {ratio}")
        self.num_features = num_channels
        self.ratio = ratio
        self.bn_first = bn_first
        if bn_first:
            bn_ch = int(num_channels * (1 - ratio))
            in_ch = num_channels - bn_ch
        else:
            in_ch = int(num_channels * ratio)
            bn_ch = num_channels - in_ch
        if in_ch < 1 or bn_ch < 1:
            raise ValueError(f"IBN({num_channels}): ratio {ratio} leaves an empty IN or BN part")
        self.half = in_ch  # official attribute name
        self.IN = InstanceNorm2d(in_ch, affine=True)
        self.BN = BatchNorm2d(bn_ch)

    def forward(self, x: Tensor) -> Tensor:  # N×C×H×W -> N×C×H×W
        check_nchw(self, x, self.num_features, need_batch=self.training, need_spatial=True)
        if self.bn_first:
            xb, xi = torch.split(x, [self.BN.num_features, self.half], dim=1)
            return torch.cat((self.BN(xb), self.IN(xi)), dim=1)
        xi, xb = torch.split(x, [self.half, self.BN.num_features], dim=1)
        return torch.cat((self.IN(xi), self.BN(xb)), dim=1)

    def forward_affine(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """Forward with one C-wide γ, β (C or N×C, in channel order) in place of the halves'
        own; for conditional IBN, whose halves have had their affine parameters removed."""
        check_nchw(self, x, self.num_features, need_batch=self.training, need_spatial=True)
        sizes = ([self.BN.num_features, self.half] if self.bn_first
                 else [self.half, self.BN.num_features])
        xs = torch.split(x, sizes, dim=1)
        ws, bs = torch.split(weight, sizes, dim=-1), torch.split(bias, sizes, dim=-1)
        i_in = 1 if self.bn_first else 0
        out = [self.IN.forward_affine(xs[i_in], ws[i_in], bs[i_in]),
               per_sample_affine(self.BN(xs[1 - i_in]), ws[1 - i_in], bs[1 - i_in])]
        return torch.cat(out[::-1] if self.bn_first else out, dim=1)

    def extra_repr(self) -> str:
        return f"{self.num_features}, ratio={self.ratio}, bn_first={self.bn_first}"


def _default_groups(num_channels: int, max_groups: int = 32) -> int:
    """Largest group count ≤ ``max_groups`` dividing ``num_channels`` (GN's 32 where it fits)."""
    for g in range(min(max_groups, num_channels), 0, -1):
        if num_channels % g == 0:
            return g
    return 1


class GroupNorm2d(InstanceStatsNorm, nn.GroupNorm):
    """Group Normalization (Wu & He 2018) with ``num_channels`` first; 32 groups where they divide."""

    def __init__(self, num_channels: int, num_groups: int | None = None, eps: float = 1e-5,
                 affine: bool = True) -> None:
        groups = num_groups if num_groups is not None else _default_groups(num_channels)
        if num_channels % groups:
            raise ValueError(f"GroupNorm2d({num_channels}): {groups} groups do not divide "
                             f"{num_channels} channels")
        super().__init__(groups, num_channels, eps=eps, affine=affine)

    def forward(self, x: Tensor) -> Tensor:  # N×C×H×W -> N×C×H×W
        return self.forward_affine(x, self.weight, self.bias)

    def forward_affine(self, x: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
        """``forward`` with γ, β given (C or N×C); N×C×H×W -> N×C×H×W."""
        check_nchw(self, x, self.num_channels)
        if x.shape[2] * x.shape[3] * (self.num_channels // self.num_groups) <= 1:
            raise ValueError(f"{type(self).__name__}({self.num_channels}): a group of one value "
                             f"cannot be normalised, input shape {tuple(x.shape)}")
        return self._dispatch(x, {"weight": weight, "bias": bias})

    def _forward_own(self, x: Tensor, weight: Tensor | None = None,
                     bias: Tensor | None = None) -> Tensor:
        if (weight is not None and weight.dim() > 1) or (bias is not None and bias.dim() > 1):
            y = F.group_norm(x, self.num_groups, None, None, self.eps)
            return per_sample_affine(y, weight, bias)
        return F.group_norm(x, self.num_groups, weight, bias, self.eps)  # as nn.GroupNorm

    def stats_width(self) -> int:
        return self.num_groups

    def instance_stats(self, x: Tensor) -> InstanceStats:
        xg = _f32(x).reshape(x.shape[0], self.num_groups, -1)  # N×G×(C/G·H·W)
        var, mean = torch.var_mean(xg, dim=-1, unbiased=False)  # N×G each
        return InstanceStats(mean, var)

    def normalize_with_stats(self, x: Tensor, stats: InstanceStats, weight: Tensor | None = None,
                             bias: Tensor | None = None) -> Tensor:
        per_group = self.num_channels // self.num_groups
        mean = stats.mean.repeat_interleave(per_group, dim=1)  # N×G -> N×C, group-major as GN
        var = stats.var.repeat_interleave(per_group, dim=1)
        a, b = instance_coefficients(mean, var, weight, bias, eps=self.eps)
        return apply_planes(x, a, b)


class GroupNorm1(GroupNorm2d):
    """Layer Normalization (Ba et al. 2016) of a conv feature map as Wu & He define it for CNNs:
    GroupNorm with one group, statistics per sample over all of C×H×W, per-channel γ, β (the
    norm named "ln"). timm calls this ``GroupNorm1``; timm's ``LayerNorm2d`` is another norm
    (statistics over C at each position, ConvNeXt's), hence this name."""

    def __init__(self, num_channels: int, eps: float = 1e-5, affine: bool = True) -> None:
        super().__init__(num_channels, num_groups=1, eps=eps, affine=affine)


def sn_coefficients(mean_in: Tensor, var_in: Tensor, weight: Tensor, bias: Tensor,
                    mean_weight: Tensor, var_weight: Tensor, bn_mean: Tensor | None = None,
                    bn_var: Tensor | None = None, *, eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Switchable Normalization (Luo et al., ICLR 2019, eq. 3–4) as a per-plane a·x + b: the
    mean and variance are softmax mixtures of the IN (per plane), LN (per sample) and BN (per
    channel; running statistics in eval) statistics, with separate weights for each."""
    second = var_in + mean_in.square()
    mean_ln = mean_in.mean(1, keepdim=True)  # N×1
    var_ln = second.mean(1, keepdim=True) - mean_ln.square()
    if bn_mean is None:
        bn_mean, bn_var = batch_stats_from_planes(mean_in, var_in)
    wm = torch.softmax(_f32(mean_weight), 0)
    wv = torch.softmax(_f32(var_weight), 0)
    mean = wm[0] * mean_in + wm[1] * mean_ln + wm[2] * _f32(bn_mean)
    var = (wv[0] * var_in + wv[1] * var_ln + wv[2] * _f32(bn_var)).clamp_min(0.0)
    a = _f32(weight) * torch.rsqrt(var + eps)
    return a, _f32(bias) - mean * a


class SwitchableNorm2d(InstanceStatsNorm, _RunningStatsNorm):
    """Switchable Normalization (Luo et al., ICLR 2019): learned softmax weights (``mean_weight``,
    ``var_weight``, order IN, LN, BN) mix the three kinds of statistics. BIN is close to the slice
    without LN, mixing normalised outputs instead of statistics.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5, momentum: float | None = 0.1) -> None:
        super().__init__(num_channels, eps=eps, momentum=momentum)
        self.mean_weight = nn.Parameter(torch.ones(3))
        self.var_weight = nn.Parameter(torch.ones(3))

    def forward(self, x: Tensor) -> Tensor:  # N×C×H×W -> N×C×H×W
        return self.forward_affine(x, self.weight, self.bias)

    def forward_affine(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        """``forward`` with γ, β given (C or N×C); N×C×H×W -> N×C×H×W."""
        check_nchw(self, x, self.num_features, need_batch=self.training, need_spatial=True)
        return self._dispatch(x, {"weight": weight, "bias": bias})

    def instance_stats(self, x: Tensor) -> InstanceStats:
        var, mean = plane_stats(x)  # N×C each; LN statistics derive from them
        return InstanceStats(mean, var)

    def normalize_with_stats(self, x: Tensor, stats: InstanceStats, weight: Tensor,
                             bias: Tensor) -> Tensor:
        a, b = sn_coefficients(stats.mean, stats.var, weight, bias, self.mean_weight,
                               self.var_weight, self.running_mean, self.running_var, eps=self.eps)
        return apply_planes(x, a, b)

    def _forward_own(self, x: Tensor, weight: Tensor, bias: Tensor) -> Tensor:
        coeff = functools.partial(sn_coefficients, eps=self.eps)
        params = (weight, bias, self.mean_weight, self.var_weight)
        if not self.training:
            return plane_affine(x, coeff, *params, self.running_mean, self.running_var)[0]
        y, mean_nc, var_nc = plane_affine(x, coeff, *params)
        update_running_stats_(self.running_mean, self.running_var, mean_nc, var_nc,
                              x.shape[0] * x.shape[2] * x.shape[3], _ema_factor(self))
        return y


# Every class that normalises; their affine parameters get no weight decay.
NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, _RunningStatsNorm, IBN,
)
