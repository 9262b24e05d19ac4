"""Fused per-plane normalization: Batch-Instance Normalization (Nam & Kim, NeurIPS 2018, eq. 3)
and every norm that is an affine map of each (n, c) plane.

The official BIN runs a full batch norm and a full instance norm and mixes the outputs: two
normalised copies of the activation in forward and two full backward passes. But BN, IN and any
mix of them are affine in ``x`` per (n, c) plane:

    y[n,c] = a[n,c] · x[n,c] + b[n,c]

with ``a``, ``b`` functions of the plane means/variances (batch statistics are derived from them)
and of the parameters. So forward is one statistics pass plus one fused multiply-add, and backward
is one reduction pass (Σg and Σg·x per plane) plus one elementwise pass. The small N×C algebra
that turns statistics into ``a``, ``b`` is differentiated by autograd inside ``backward``, so each
formula is written once, in its ``coefficients`` function.
"""
from __future__ import annotations

import functools
from typing import Callable

import torch
from torch import Tensor

CoeffFn = Callable[..., tuple[Tensor, Tensor]]


def _f32(t: Tensor) -> Tensor:
    """At least float32: statistics and coefficients are never computed in half precision."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _compiling() -> bool:
    """True while torch.compile (dynamo) traces: data-dependent Python branches must not run."""
    try:
        return torch.compiler.is_compiling()
    except AttributeError:  # pragma: no cover - torch without torch.compiler
        return False


# Planes whose mean dominates their spread (μ² > this · σ²) get their variance recomputed in
# two passes: the one-pass E[x²] − μ² loses precision to cancellation there.
_CANCEL_RATIO = 64.0


def plane_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-(n, c) biased variance and mean over H×W, in float32 or better. N×C×H×W → (N×C, N×C).

    On CPU: one read of ``x`` for the mean and one fused dot product for E[x²] (several times
    faster than ``torch.var_mean`` over dims (2, 3)); ill-conditioned planes are redone exactly.
    Not differentiable on its own: ``PlaneAffine`` supplies the gradient.
    """
    n, c, h, w = x.shape
    xf = _f32(x)
    if xf.device.type != "cpu" or _compiling():
        # Accelerators and inductor's generated kernels reduce in one Welford pass already (no
        # cancellation to repair), and the fallback test below would cost a host synchronisation
        # per layer (under torch.compile: a graph break per norm layer).
        var, mean = torch.var_mean(xf, dim=(2, 3), unbiased=False)
        return var, mean
    if xf.is_contiguous():
        xv = xf.view(n * c, h * w)
        mean = xv.mean(1)
        sq = torch.linalg.vecdot(xv, xv) / (h * w)
    else:  # channels_last and other strides: reduce over the spatial dims of an N×H×W×C view
        xs = xf.permute(0, 2, 3, 1)
        mean = xs.mean((1, 2)).reshape(n * c)
        sq = (xs * xs).mean((1, 2)).reshape(n * c)
    var = sq - mean.square()
    bad = (mean.square() > _CANCEL_RATIO * var) | (var < 0)
    if bool(bad.any()):
        idx = bad.nonzero().squeeze(1)
        planes = xf[idx // c, idx % c]  # k×H×W copy of the few bad planes
        var[idx] = planes.var(dim=(1, 2), unbiased=False)
    return var.clamp_min(0.0).view(n, c), mean.view(n, c)


def _affine_nc(x: Tensor, a: Tensor, b: Tensor | None) -> Tensor:
    """x·a + b per (n, c) plane (a, b: N×C), in x's dtype and memory format.

    For contiguous input this is the eval-mode batch-norm kernel on an (1, N·C, H, W) view with
    mean 0, variance 1, eps 0 — exactly x·a + b, and much faster on CPU than a broadcast addcmul.
    """
    n, c, h, w = x.shape
    if x.is_contiguous():
        zeros = torch.zeros(n * c, dtype=x.dtype, device=x.device)
        ones = torch.ones(n * c, dtype=x.dtype, device=x.device)
        bb = None if b is None else b.reshape(-1).to(x.dtype)
        y = torch.batch_norm(x.view(1, n * c, h, w), a.reshape(-1).to(x.dtype), bb, zeros, ones,
                             False, 0.0, 0.0, False)
        # _unsafe_view: the result must not be an autograd view, or an in-place op on the
        # layer's output (nn.ReLU(inplace=True)) would be refused.
        return torch.ops.aten._unsafe_view(y, (n, c, h, w))
    y = x * a.to(x.dtype).view(n, c, 1, 1)
    return y if b is None else y.add_(b.to(x.dtype).view(n, c, 1, 1))


def _apply_planes(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """x·a + b with a, b of shape N×C, output in x's dtype and memory format.

    Low-precision inputs are combined in float32: b ≈ −a·μ, so rounding a and b to bf16 first
    would cancel catastrophically where x is close to its mean.
    """
    if x.dtype in (torch.float32, torch.float64):
        return _affine_nc(x, a, b)
    return _affine_nc(x.float(), a, b).to(x.dtype)


def _autograd_vjp(coeff_fn: CoeffFn, mean_nc: Tensor, var_nc: Tensor, s2: Tensor, s1: Tensor,
                  params: tuple[Tensor, ...], needs: tuple[bool, ...]):
    """Pull (∂L/∂a, ∂L/∂b) back through ``coeff_fn`` with autograd: (∂L/∂μ, ∂L/∂σ², param grads)."""
    want = [i for i in range(len(params)) if needs[i]]
    with torch.enable_grad():
        m = mean_nc.detach().requires_grad_()
        v = var_nc.detach().requires_grad_()
        ps = [p.detach().requires_grad_(i in want) for i, p in enumerate(params)]
        a_, b_ = coeff_fn(m, v, *ps)
        grads = torch.autograd.grad((a_, b_), [m, v] + [ps[i] for i in want],
                                    (s2.to(a_.dtype), s1.to(b_.dtype)), allow_unused=True)
    gm, gv = (torch.zeros_like(m) if t is None else t for t in grads[:2])
    pgrads: list[Tensor | None] = [None] * len(params)
    for i, gp in zip(want, grads[2:]):
        pgrads[i] = torch.zeros_like(params[i]) if gp is None else gp.to(params[i].dtype)
    return gm, gv, pgrads


class PlaneAffine(torch.autograd.Function):
    """y = a(μ_nc, σ²_nc, θ)·x + b(μ_nc, σ²_nc, θ) per plane, with a one-pass backward.

    ``coeff_fn(mean_nc, var_nc, *params) -> (a, b)`` (each N×C) holds the norm's formula.
    Returns ``(y, mean_nc, var_nc)``; the statistics are non-differentiable side outputs so the
    caller can update running buffers without another pass over ``x``.
    """

    @staticmethod
    def forward(ctx, x: Tensor, coeff_fn: CoeffFn, *params: Tensor):
        var_nc, mean_nc = plane_stats(x)
        a, b = coeff_fn(mean_nc, var_nc, *params)
        y = _apply_planes(x, a, b)
        ctx.coeff_fn = coeff_fn
        ctx.save_for_backward(x, mean_nc, var_nc, a, *params)
        ctx.mark_non_differentiable(mean_nc, var_nc)
        return y, mean_nc, var_nc

    @staticmethod
    def backward(ctx, g: Tensor, _gm, _gv):
        x, mean_nc, var_nc, a, *params = ctx.saved_tensors
        n, c, h, w = x.shape
        gf = _f32(g)
        xf = x if x.dtype == gf.dtype else x.to(gf.dtype)
        if gf.is_contiguous() and xf.is_contiguous():
            g2, x2 = gf.view(n * c, h * w), xf.view(n * c, h * w)
            s1 = g2.sum(1).view(n, c)  # Σ_hw g    = ∂L/∂b
            s2 = torch.linalg.vecdot(g2, x2).view(n, c)  # Σ_hw g·x  = ∂L/∂a
        else:
            s1 = gf.sum(dim=(2, 3))
            s2 = (gf * xf).sum(dim=(2, 3))
        vjp = getattr(ctx.coeff_fn, "vjp", None)
        if vjp is not None:  # closed form: far fewer small ops than autograd on the N×C graph
            gm, gv, pgrads = vjp(mean_nc, var_nc, s2, s1, *params)
            pgrads = [None if gp is None or not ctx.needs_input_grad[2 + i] else gp.to(p.dtype)
                      for i, (gp, p) in enumerate(zip(pgrads, params))]
        else:
            gm, gv, pgrads = _autograd_vjp(ctx.coeff_fn, mean_nc, var_nc, s2, s1, params,
                                           ctx.needs_input_grad[2:])
        dx = None
        if ctx.needs_input_grad[0]:
            # x enters through a·x and through μ_nc (∂μ/∂x = 1/HW) and σ²_nc
            # (∂σ²/∂x = 2(x−μ)/HW):  dx = g·a + x·(2·gv/HW) + (gm − 2·μ·gv)/HW.
            hw = h * w
            k = (2.0 * gv / hw).to(gf.dtype).view(n, c, 1, 1)
            c0 = (gm - 2.0 * mean_nc * gv) / hw
            dx = _affine_nc(gf, a, c0)
            dx.addcmul_(xf, k)
            dx = dx.to(x.dtype)
        return (dx, None, *pgrads)


def plane_affine(x: Tensor, coeff_fn: CoeffFn, *params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Apply a per-plane affine norm (see ``PlaneAffine``), statistics in float32, autocast off.

    While ``torch.onnx.export`` traces the model the same map is written with plain tensor ops
    (``plane_affine_plain``): an exported graph cannot hold the custom autograd Function, and the
    one-pass CPU statistics of ``plane_stats`` branch on the data. Under torch.compile too:
    inductor fuses var_mean and the multiply-add into its own kernels (the custom Function and
    its data-dependent branch would split the graph at every norm layer).
    """
    if torch.onnx.is_in_onnx_export() or _compiling():
        return plane_affine_plain(x, coeff_fn, *params)
    with torch.autocast(x.device.type, enabled=False):
        return PlaneAffine.apply(x, coeff_fn, *params)


def plane_affine_plain(x: Tensor, coeff_fn: CoeffFn,
                       *params: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``plane_affine`` with ordinary differentiable ops only (var_mean, the coefficient formula,
    a broadcast multiply-add): what ONNX export records. Same values up to rounding."""
    var_nc, mean_nc = torch.var_mean(_f32(x), dim=(2, 3), unbiased=False)  # N×C each
    a, b = coeff_fn(mean_nc, var_nc, *params)  # N×C each (or broadcastable to it)
    y = _f32(x) * a.unsqueeze(-1).unsqueeze(-1) + b.unsqueeze(-1).unsqueeze(-1)
    return y.to(x.dtype), mean_nc, var_nc


def instance_coefficients(mean: Tensor, var: Tensor, weight: Tensor | None = None,
                          bias: Tensor | None = None, *,
                          eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-plane a, b of instance normalization (Ulyanov et al. 2016) with an affine map:
    y = γ·(x − μ)/√(σ² + ε) + β = a·x + b. ``mean``/``var``: N×C; ``weight``/``bias``: C, N×C or
    None (γ = 1, β = 0). Also GN/LN once their group statistics are spread over the channels."""
    a = torch.rsqrt(_f32(var) + eps)
    if weight is not None:
        a = _f32(weight) * a
    b = -_f32(mean) * a
    if bias is not None:
        b = b + _f32(bias)
    return a, b


def apply_planes(x: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """y = a·x + b with a, b of shape N×C (broadcast from 1×C or C if needed), in x's dtype and
    memory format; the fast kernel of ``PlaneAffine``'s forward (plain ops under ONNX export)."""
    n, c = x.shape[:2]
    a, b = a.expand(n, c), b.expand(n, c)
    if torch.onnx.is_in_onnx_export() or _compiling():  # plain ops fuse under inductor
        y = _f32(x) * a.unsqueeze(-1).unsqueeze(-1) + b.unsqueeze(-1).unsqueeze(-1)
        return y.to(x.dtype)
    return _apply_planes(x, a, b)


def per_sample_affine(y: Tensor, weight: Tensor | None, bias: Tensor | None) -> Tensor:
    """y·γ + β for a normalised N×C×H×W ``y``, with γ, β of shape C or N×C (one row per sample,
    as conditional norms select them) or None."""
    if weight is not None:
        y = y * weight.to(y.dtype).unsqueeze(-1).unsqueeze(-1)
    if bias is not None:
        y = y + bias.to(y.dtype).unsqueeze(-1).unsqueeze(-1)
    return y


def batch_stats_from_planes(mean_nc: Tensor, var_nc: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel biased batch mean/variance over N×H×W from the per-plane statistics:
    μ_c = mean_n μ_nc, σ²_c = mean_n(σ²_nc + μ_nc²) − μ_c² (every plane has H×W pixels)."""
    mean = mean_nc.mean(0)
    var = ((var_nc + mean_nc.square()).mean(0) - mean.square()).clamp_min(0.0)
    return mean, var


@torch.no_grad()
def update_running_stats_(running_mean: Tensor, running_var: Tensor, mean_nc: Tensor | None,
                          var_nc: Tensor | None, count: int, momentum: float, *,
                          batch_stats: tuple[Tensor, Tensor] | None = None) -> None:
    """Move running statistics toward this batch's, as ``F.batch_norm`` does: the variance is
    stored unbiased (× count/(count−1)), ``count`` = N·H·W values per channel.

    ``batch_stats`` (biased per-channel mean, variance) replaces the statistics derived from
    the planes: synchronised layers pass the global ones, with the global ``count``.
    """
    if batch_stats is None:
        bn_mean, bn_var = batch_stats_from_planes(mean_nc, var_nc)
    else:
        bn_mean, bn_var = batch_stats
    running_mean.lerp_(bn_mean.to(running_mean.dtype), momentum)
    running_var.lerp_((bn_var * (count / max(count - 1, 1))).to(running_var.dtype), momentum)


def bin_coefficients(mean_nc: Tensor, var_nc: Tensor, weight: Tensor, bias: Tensor, gate: Tensor,
                     bn_mean: Tensor | None = None, bn_var: Tensor | None = None, *,
                     eps: float = 1e-5) -> tuple[Tensor, Tensor]:
    """Per-plane scale and shift of BIN, eq. (3): y = (ρ·x̂_BN + (1−ρ)·x̂_IN)·γ + β = a·x + b.

    Without ``bn_mean``/``bn_var`` (training) the BN branch uses batch statistics derived from
    the plane statistics; with them (eval) it uses those running statistics.
    """
    if bn_mean is None:
        bn_mean, bn_var = batch_stats_from_planes(mean_nc, var_nc)
    inv_bn = torch.rsqrt(_f32(bn_var) + eps)  # C
    inv_in = torch.rsqrt(var_nc + eps)  # N×C
    rho, gamma = _f32(gate), _f32(weight)
    a = gamma * (rho * inv_bn + (1.0 - rho) * inv_in)
    b = _f32(bias) - gamma * (rho * _f32(bn_mean) * inv_bn + (1.0 - rho) * mean_nc * inv_in)
    return a, b


class BINCoefficients:
    """``bin_coefficients`` with a fixed eps, plus its closed-form vector-Jacobian product so the
    backward pass of BIN does a handful of N×C operations instead of autograd's graph."""

    def __init__(self, eps: float = 1e-5) -> None:
        self.eps = eps

    def __call__(self, mean_nc, var_nc, weight, bias, gate, bn_mean=None, bn_var=None):
        return bin_coefficients(mean_nc, var_nc, weight, bias, gate, bn_mean, bn_var, eps=self.eps)

    def vjp(self, m: Tensor, v: Tensor, s2: Tensor, s1: Tensor, weight: Tensor, bias: Tensor,
            gate: Tensor, bn_mean: Tensor | None = None, bn_var: Tensor | None = None):
        """Given ∂L/∂a = s2 and ∂L/∂b = s1 (N×C), return ∂L/∂μ_nc, ∂L/∂σ²_nc and the gradients
        of (weight, bias, gate, bn_mean, bn_var); the running statistics get none."""
        train = bn_mean is None
        if train:
            bn_mean, bn_var = batch_stats_from_planes(m, v)
        n = m.shape[0]
        gamma, rho = _f32(weight), _f32(gate)
        mu_c = _f32(bn_mean)
        s_bn = torch.rsqrt(_f32(bn_var) + self.eps)  # C
        s_in = torch.rsqrt(v + self.eps)  # N×C
        # a = γ(ρ s_bn + (1−ρ) s_in);  b = β − γ(ρ μ_c s_bn + (1−ρ) μ_nc s_in)
        d_in = s2 - s1 * m  # ∂L/∂s_in / (γ(1−ρ))
        d_bn = (s2 - s1 * mu_c).sum(0)  # Σ_n of ∂L/∂s_bn / (γρ)
        s1_sum = s1.sum(0)
        g_gamma = (rho * s_bn * d_bn) + ((1.0 - rho) * (s_in * d_in).sum(0))
        g_rho = gamma * (s_bn * d_bn - (s_in * d_in).sum(0))
        gi = gamma * (1.0 - rho)  # C
        gm = -gi * s1 * s_in  # direct: b depends on μ_nc
        gv = gi * d_in * (-0.5) * s_in.pow(3)  # through s_in = (σ²_nc + eps)^-½
        if train:
            g_var_c = gamma * rho * d_bn * (-0.5) * s_bn.pow(3)  # ∂L/∂σ²_c
            g_mu_c = -gamma * rho * s_bn * s1_sum  # ∂L/∂μ_c
            # μ_c = mean_n μ_nc;  σ²_c = mean_n(σ²_nc + μ²_nc) − μ²_c
            gm = gm + (g_mu_c + 2.0 * g_var_c * (m - mu_c)) / n
            gv = gv + g_var_c / n
        return gm, gv, [g_gamma, s1_sum, g_rho, None, None]


def batch_instance_norm(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    gate: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """Batch-Instance Normalization, eq. (3) of Nam & Kim (2018), on an N×C×H×W tensor, fused.

    In training the BN branch uses batch statistics and the running buffers (if given) are
    updated in place as ``F.batch_norm`` updates them (unbiased variance); in eval the BN branch
    uses the running statistics while the IN branch always uses per-instance statistics.
    ``weight``, ``bias``, ``gate``: C, or N×C for one row per sample (conditional BIN).
    """
    coeff: CoeffFn = BINCoefficients(eps)
    if weight.dim() > 1 or bias.dim() > 1 or gate.dim() > 1:
        # per-sample γ, β, ρ (N×C, conditional BIN): the closed-form vjp sums over the batch as
        # for shared parameters, so autograd differentiates the N×C formula instead.
        coeff = functools.partial(bin_coefficients, eps=eps)
    if training or running_mean is None:
        y, mean_nc, var_nc = plane_affine(x, coeff, weight, bias, gate)
        if training and running_mean is not None:
            update_running_stats_(running_mean, running_var, mean_nc, var_nc,
                                  x.shape[0] * x.shape[2] * x.shape[3], momentum)
        return y
    return plane_affine(x, coeff, weight, bias, gate, running_mean, running_var)[0]


def batch_instance_norm_reference(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    gate: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    training: bool = True,
    momentum: float = 0.1,
    eps: float = 1e-5,
) -> Tensor:
    """BIN written naively from eq. (3), as the official code does: one full batch norm, one
    full instance norm, mixed. The ground truth in tests and the baseline in benchmarks."""
    import torch.nn.functional as F

    x_bn = F.batch_norm(x, running_mean, running_var, None, None,
                        training or running_mean is None, momentum, eps)
    x_in = F.instance_norm(x, eps=eps)
    g = gate.view(1, -1, 1, 1)
    return (g * x_bn + (1 - g) * x_in) * weight.view(1, -1, 1, 1) + bias.view(1, -1, 1, 1)
