"""Statistics transfer: normalise features with their own statistics, de-normalise with foreign ones.

Style transfer is normalization with foreign statistics. Instance Norm removes a feature map's
per-channel mean and spread (the "style" of IBN-Net and of Huang & Belongie); putting back the
statistics of another image's features transfers its style:

- AdaIN (Huang & Belongie, ICCV 2017, eq. 8): ``AdaIN(x, y) = σ(y)·(x − μ(x))/σ(x) + μ(y)``,
  μ and σ per instance and channel over H×W — the first two moments of every channel.
- WCT (Li et al., NeurIPS 2017, eq. 1–3): whiten the centred content features with the inverse
  square root of their C×C covariance, colour them with the square root of the style's, add the
  style mean. The output's covariance is the style's: the correlations between channels (which
  the Gram loss measures) move too, not only each channel's spread.

Both are pure functions of tensors. The statistics can be computed once (``mean_std``,
``mean_cov``) and reused, so that a whole video, or every tile of a large image, is stylized with
one fixed set of style (and thumbnail content) statistics. Eigendecompositions run in float64:
in float32 the small eigenvalues of a 256×256 covariance lose most of their digits, and their
inverse square roots amplify exactly those.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import torch
from torch import Tensor


@dataclass(frozen=True)
class MeanStd:
    """Per-instance, per-channel moments of N×C×H×W features: ``mean``, ``std`` are N×C×1×1."""

    mean: Tensor
    std: Tensor


@dataclass(frozen=True)
class MeanCov:
    """Per-instance channel mean (N×C×1) and covariance (N×C×C), float64."""

    mean: Tensor
    cov: Tensor


def _check(f: Tensor, what: str) -> None:
    if f.dim() != 4:
        raise ValueError(f"{what} features must be N×C×H×W, got shape {tuple(f.shape)}")


def mean_std(f: Tensor, eps: float = 1e-5) -> MeanStd:
    """μ and σ = sqrt(var + eps) over H×W of every (instance, channel) of ``f`` (N×C×H×W)."""
    _check(f, "the")
    var, mean = torch.var_mean(f.float(), dim=(2, 3), keepdim=True, correction=0)
    return MeanStd(mean, (var + eps).sqrt())


def adain(content: Tensor, style: Tensor | MeanStd, eps: float = 1e-5,
          content_stats: MeanStd | None = None) -> Tensor:
    """Adaptive Instance Normalization (Huang & Belongie 2017, eq. 8).

    ``content``: N×C×H×W features; ``style``: features (1 or N instances) or their ``MeanStd``.
    ``content_stats`` replaces the content's own statistics (e.g. a thumbnail's, for tiles).
    The output has the style's per-channel mean and (up to ``eps``) standard deviation.
    """
    _check(content, "content")
    s = style if isinstance(style, MeanStd) else mean_std(style, eps)
    c = content_stats if content_stats is not None else mean_std(content, eps)
    if s.mean.shape[1] != content.shape[1]:
        raise ValueError(f"AdaIN: content has {content.shape[1]} channels, style {s.mean.shape[1]}")
    out = (content.float() - c.mean) / c.std * s.std + s.mean  # N×C×H×W
    return out.to(content.dtype)


def mean_cov(f: Tensor, chunk: int = 65536) -> MeanCov:
    """Channel mean and covariance of each instance of ``f`` (N×C×H×W), in float64.

    Accumulated over chunks of ``chunk`` positions, so a large image never needs a float64 copy
    of all its features (C×H×W·8 bytes)."""
    _check(f, "the")
    n, c, h, w = f.shape
    x = f.reshape(n, c, h * w)
    total = x.sum(dim=2, dtype=torch.float64).unsqueeze(-1)
    mean = total / (h * w)  # N×C×1
    cov = torch.zeros(n, c, c, dtype=torch.float64, device=f.device)
    for i in range(0, h * w, chunk):
        xc = x[:, :, i:i + chunk].double() - mean
        cov += xc @ xc.transpose(1, 2)
    return MeanCov(mean, cov / max(h * w - 1, 1))


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the block on one torch/LAPACK thread: the statistics and WCT step (covariance GEMMs,
    256×256 float64 ``eigh``, the C×C transform) are latency-bound. Measured on a shared 2-core
    box (load ≈ 10): one ``eigh`` 0.04–0.08 s on one thread, 12–17 s on two (the threaded LAPACK
    path waits on busy cores); the relu1_1 covariance of a 384² photo 0.5–0.6 s on one thread,
    1.3–1.9 s on two. Too small to gain much from threads on an idle machine either."""
    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _matrix_power(cov: Tensor, power: float, eps: float) -> Tensor:
    """(cov + eps·I)^power for symmetric PSD ``cov`` (N×C×C, float64) by eigendecomposition."""
    eye = torch.eye(cov.shape[-1], dtype=cov.dtype, device=cov.device)
    with one_thread():
        vals, vecs = torch.linalg.eigh(cov + eps * eye)
    vals = vals.clamp_min(eps)  # rounding can leave tiny negative eigenvalues
    return (vecs * vals.pow(power).unsqueeze(-2)) @ vecs.transpose(-1, -2)


def _apply(matrix: Tensor, content: Tensor, c_mean: Tensor, s_mean: Tensor | None) -> Tensor:
    """``matrix @ (x − c_mean) (+ s_mean)`` per instance, in float32 (float64 for float64 input):
    the matrices carry the precision; applying them needs none of it."""
    n, c, h, w = content.shape
    dt = torch.float64 if content.dtype == torch.float64 else torch.float32
    x = content.reshape(n, c, h * w).to(dt) - c_mean.to(dt)
    out = matrix.to(dt) @ x
    return out if s_mean is None else out + s_mean.to(dt)


def whiten(content: Tensor, eps: float = 1e-5, content_stats: MeanCov | None = None) -> Tensor:
    """Centred content features with identity covariance (Li et al. 2017, eq. 1): N×C×(H·W)."""
    _check(content, "content")
    stats = content_stats if content_stats is not None else mean_cov(content)
    return _apply(_matrix_power(stats.cov, -0.5, eps), content, stats.mean, None)


def wct(content: Tensor, style: Tensor | MeanCov, eps: float = 1e-5,
        content_stats: MeanCov | None = None) -> Tensor:
    """Whitening and colouring transform (Li et al. 2017, eq. 1–3).

    ``content``: N×C×H×W features; ``style``: features (1 or N instances) or their ``MeanCov``;
    ``content_stats`` replaces the content's own (a thumbnail's, for tiles). The covariances
    and their matrix roots are float64; ``eps`` regularises both. The output's channel covariance
    is the style's (exactly so when the content covariance has full rank and ``eps`` → 0).
    """
    _check(content, "content")
    s = style if isinstance(style, MeanCov) else mean_cov(style)
    n, c, h, w = content.shape
    if s.cov.shape[-1] != c:
        raise ValueError(f"WCT: content has {c} channels, style {s.cov.shape[-1]}")
    stats = content_stats if content_stats is not None else mean_cov(content)
    transform = _matrix_power(s.cov, 0.5, eps) @ _matrix_power(stats.cov, -0.5, eps)  # N×C×C
    out = _apply(transform, content, stats.mean, s.mean)  # N×C×HW
    return out.reshape(n, c, h, w).to(content.dtype)


def blend(outputs: Sequence[Tensor], weights: Sequence[float]) -> Tensor:
    """Σ w_k · outputs_k with weights normalised to sum 1 (style interpolation, Huang & Belongie
    Sec. 7; Li et al. Sec. 4)."""
    if not outputs or len(outputs) != len(weights):
        raise ValueError("blend needs one weight per output")
    total = float(sum(weights))
    if total <= 0 or any(w < 0 for w in weights):
        raise ValueError(f"blend weights must be ≥ 0 and not all 0, got {list(weights)}")
    out = outputs[0] * (weights[0] / total)
    for o, w in zip(outputs[1:], weights[1:]):
        out = out + o * (w / total)
    return out


TRANSFERS = {"wct": wct, "adain": adain}  # by name; WCT first (the stronger transfer)
