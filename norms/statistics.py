"""Where per-instance normalization statistics come from (inference only).

Every layer that normalises with per-instance statistics (IN, BN+IN, BIN, IBN's IN half, SN, GN,
LN) derives from ``InstanceStatsNorm``. Its forward asks one attribute, ``stats_source``; when that
is None (always, outside the context managers below) the layer runs its own fast path unchanged.
A source is a callable ``source(layer, x, affine) -> y`` that decides which statistics the layer
normalises with, through two methods every such layer has:

- ``layer.instance_stats(x) -> InstanceStats``: the statistics it would compute from ``x``
  (mean/variance per (n, c) plane, or per (n, group) for GN/LN), float32;
- ``layer.normalize_with_stats(x, stats, **affine)``: its formula with those statistics.

Three sources:

- own (default): the statistics of the input itself;
- ``capture_statistics`` / ``use_statistics``: statistics recorded on one pass (for example a
  thumbnail of the whole image) and reused on others (its tiles) — Thumbnail Instance
  Normalization, Chen et al., "Towards Ultra-Resolution Neural Style Transfer via Thumbnail
  Instance Normalization", AAAI 2022 (URST), sec. 3.2;
- ``stream_statistics``: an exponential moving average of the statistics over a stream of
  frames, in order, so that batched and unbatched video give the same output. The average lives
  in the block, or in a ``StreamState`` passed to it, which carries it across blocks (a live
  stream that arrives one frame per call, e.g. a webcam in a web UI).

BN-type branches keep their running statistics, as in eval mode today.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any, Callable, NamedTuple

import torch
from torch import Tensor, nn


class InstanceStats(NamedTuple):
    """Per-instance statistics of one layer: ``mean`` and biased ``var``, each N×K float32 (K = C
    planes, or the number of groups for GN/LN)."""

    mean: Tensor
    var: Tensor


StatsSource = Callable[[nn.Module, Tensor, dict[str, Any]], Tensor]


class InstanceStatsNorm:
    """Mixin of the layers that normalise with per-instance statistics (see module docstring).

    Subclasses implement ``instance_stats``, ``normalize_with_stats`` and ``_forward_own`` (their
    default path), and call ``self._dispatch(x, affine)`` from ``forward``.
    """

    stats_source: StatsSource | None = None

    def uses_instance_stats(self) -> bool:
        """Whether the layer's current mode normalises with per-instance statistics at all."""
        return True

    def stats_width(self) -> int:
        """K: statistics per image (channels, or groups for GN/LN)."""
        return int(self.num_features)  # type: ignore[attr-defined]

    def instance_stats(self, x: Tensor) -> InstanceStats:
        raise NotImplementedError

    def normalize_with_stats(self, x: Tensor, stats: InstanceStats, **affine: Any) -> Tensor:
        raise NotImplementedError

    def _forward_own(self, x: Tensor, **affine: Any) -> Tensor:
        raise NotImplementedError

    def _dispatch(self, x: Tensor, affine: dict[str, Any]) -> Tensor:
        source = self.stats_source
        if source is None or not self.uses_instance_stats():
            return self._forward_own(x, **affine)
        return source(self, x, affine)


def _fp32(x: Tensor) -> contextlib.AbstractContextManager:
    """Autocast off: statistics and coefficients in float32, as ``plane_affine`` computes them."""
    return torch.autocast(x.device.type, enabled=False)


def _label(name: str) -> str:
    return f"layer {name!r}" if name else "the layer"


def _check_eval(layer: nn.Module, name: str, what: str) -> None:
    if layer.training:
        raise ValueError(f"{what} is for inference only, but {_label(name)} "
                         f"({type(layer).__name__}) is in training mode; call model.eval() first")


def _instance_layers(model: nn.Module, what: str) -> list[tuple[str, nn.Module]]:
    """(name, layer) of every layer of ``model`` using per-instance statistics; checks eval mode."""
    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, InstanceStatsNorm) and m.uses_instance_stats()]
    for name, layer in layers:
        _check_eval(layer, name, what)
        if layer.stats_source is not None:
            raise ValueError(f"{what}: {_label(name)} already has a statistics source; "
                             "statistics contexts cannot be nested")
    return layers


@contextlib.contextmanager
def _installed(layers: list[tuple[nn.Module, StatsSource]]) -> Iterator[None]:
    try:
        for layer, source in layers:
            layer.stats_source = source
        yield
    finally:
        for layer, _ in layers:
            layer.__dict__.pop("stats_source", None)  # back to the class default, None


class StatisticsBank(Mapping[str, InstanceStats]):
    """Per-layer statistics captured by ``capture_statistics``: module name → ``InstanceStats``.

    Usable after the capture block (``use_statistics``); ``batch_size`` is the number of images
    the statistics were captured on (1 broadcasts over any batch).
    """

    def __init__(self, stats: dict[str, InstanceStats] | None = None) -> None:
        self._stats: dict[str, InstanceStats] = dict(stats or {})

    def __getitem__(self, name: str) -> InstanceStats:
        return self._stats[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._stats)

    def __len__(self) -> int:
        return len(self._stats)

    def __repr__(self) -> str:
        return f"StatisticsBank({len(self)} layers, batch_size={self.batch_size})"

    @property
    def batch_size(self) -> int | None:
        """Images the statistics describe (None while empty)."""
        return next((s.mean.shape[0] for s in self._stats.values()), None)

    def to(self, device: torch.device | str) -> "StatisticsBank":
        """A copy with every tensor on ``device``."""
        return StatisticsBank({k: InstanceStats(s.mean.to(device), s.var.to(device))
                               for k, s in self._stats.items()})

    def _record(self, name: str, stats: InstanceStats) -> None:
        # the last call of a layer wins (one pass per capture block is the intended use)
        self._stats[name] = InstanceStats(stats.mean.detach().clone(), stats.var.detach().clone())


class _Capture:
    def __init__(self, bank: StatisticsBank, name: str) -> None:
        self.bank, self.name = bank, name

    def __call__(self, layer: Any, x: Tensor, affine: dict[str, Any]) -> Tensor:
        _check_eval(layer, self.name, "capture_statistics")
        with _fp32(x):
            self.bank._record(self.name, layer.instance_stats(x))
        return layer._forward_own(x, **affine)  # the pass itself is the default one


class _Use:
    def __init__(self, stats: InstanceStats, name: str) -> None:
        self.stats, self.name = stats, name

    def __call__(self, layer: Any, x: Tensor, affine: dict[str, Any]) -> Tensor:
        _check_eval(layer, self.name, "use_statistics")
        mean, var = self.stats
        n = x.shape[0]
        if mean.shape[0] not in (1, n):
            raise ValueError(
                f"use_statistics: the statistics of {_label(self.name)} were captured on "
                f"{mean.shape[0]} images but the input batch has {n}; capture on one image "
                "(it applies to any batch) or on a batch of the same size")
        if mean.shape[1] != layer.stats_width():
            raise ValueError(f"use_statistics: {_label(self.name)} needs {layer.stats_width()} "
                             f"statistics per image, the bank holds {mean.shape[1]}: captured "
                             "on a different model?")
        mean = mean.to(x.device).expand(n, -1)
        var = var.to(x.device).expand(n, -1)
        with _fp32(x):
            return layer.normalize_with_stats(x, InstanceStats(mean, var), **affine)


class StreamState:
    """The per-layer moving averages of ``stream_statistics``, kept between blocks.

    Pass one to ``stream_statistics(model, momentum, state=...)`` to continue a stream where the
    last block stopped: N frames through one block and the same frames one block per frame with
    one ``StreamState`` give identical outputs. ``reset()`` starts a new stream (the next frame
    normalises with its own statistics). Keys are module names, values the running
    ``InstanceStats`` (K float32 values each); a layer whose statistics change size or device
    (another resolution of GN/LN groups, another model) restarts from its next frame. Inference
    only; not thread-safe: one stream per state.
    """

    def __init__(self) -> None:
        self._stats: dict[str, InstanceStats] = {}
        self.frames = 0  # frames seen since the last reset (by the first layer that saw them)

    def reset(self) -> None:
        """Forget the averages: the next frame starts a new stream."""
        self._stats.clear()
        self.frames = 0

    def __len__(self) -> int:
        return len(self._stats)

    def __contains__(self, name: object) -> bool:
        return name in self._stats

    def __getitem__(self, name: str) -> InstanceStats:
        return self._stats[name]

    def __repr__(self) -> str:
        return f"StreamState({len(self)} layers, {self.frames} frames)"

    def _get(self, name: str) -> InstanceStats | None:
        return self._stats.get(name)

    def _put(self, name: str, stats: InstanceStats, frames: int) -> None:
        if not self._stats:
            self.frames = 0
        first = not self._stats or name == next(iter(self._stats))
        self._stats[name] = stats
        if first:
            self.frames += frames


class _Stream:
    def __init__(self, momentum: float, name: str, state: StreamState) -> None:
        self.momentum, self.name, self.state = momentum, name, state

    def __call__(self, layer: Any, x: Tensor, affine: dict[str, Any]) -> Tensor:
        _check_eval(layer, self.name, "stream_statistics")
        if self.momentum == 0.0:
            return layer._forward_own(x, **affine)  # no memory: exactly the default path
        with _fp32(x):
            s = layer.instance_stats(x)
        prev = self.state._get(self.name)
        m, v = prev if prev is not None else (s.mean[0], s.var[0])
        if m.shape != s.mean.shape[1:] or m.device != s.mean.device:
            m, v = s.mean[0], s.var[0]  # a different stream (size of the statistics changed)
        w = 1.0 - self.momentum
        means, vars_ = [], []
        # Element by element, in order: element t sees the average through t, so a clip gives
        # the same output whether its frames come one per call or batched. lerp(a, a, w) == a
        # exactly, so a constant stream keeps its own statistics bit for bit.
        for t in range(x.shape[0]):
            m = torch.lerp(m, s.mean[t], w)
            v = torch.lerp(v, s.var[t], w)
            means.append(m)
            vars_.append(v)
        self.state._put(self.name, InstanceStats(m.detach(), v.detach()), x.shape[0])
        with _fp32(x):
            return layer.normalize_with_stats(
                x, InstanceStats(torch.stack(means), torch.stack(vars_)), **affine)


@contextlib.contextmanager
def capture_statistics(model: nn.Module) -> Iterator[StatisticsBank]:
    """Record the per-instance statistics of every such layer of ``model`` during the forward
    passes inside the block (outputs unchanged). Yields the ``StatisticsBank`` (module name →
    statistics), usable after the block. ``model`` must be in eval mode.

    >>> with norms.capture_statistics(net) as bank:
    ...     net(thumbnail)
    >>> with norms.use_statistics(net, bank):
    ...     tile_out = net(tile)
    """
    bank = StatisticsBank()
    layers = _instance_layers(model, "capture_statistics")
    with _installed([(m, _Capture(bank, n)) for n, m in layers]):
        yield bank


@contextlib.contextmanager
def use_statistics(model: nn.Module, bank: Mapping[str, InstanceStats]) -> Iterator[None]:
    """Inside the block, the per-instance layers of ``model`` normalise with ``bank``'s statistics
    instead of their input's. A bank captured on one image applies to any batch; otherwise the
    batch sizes must match. ``model`` must be in eval mode."""
    layers = _instance_layers(model, "use_statistics")
    missing = [n for n, _ in layers if n not in bank]
    if missing:
        raise ValueError(f"use_statistics: the statistics bank has nothing for layer(s) "
                         f"{', '.join(repr(n) for n in missing[:4])}; capture it on this model")
    with _installed([(m, _Use(bank[n], n)) for n, m in layers]):
        yield


@contextlib.contextmanager
def stream_statistics(model: nn.Module, momentum: float = 0.9,
                      state: StreamState | None = None) -> Iterator[StreamState]:
    """Inside the block, per-instance statistics are an exponential moving average over the
    successive forward calls and over the batch elements in order:
    s̄_t = momentum·s̄_{t−1} + (1 − momentum)·s_t (first frame: its own statistics). For video:
    temporally stable normalization, batched or not. ``momentum=0`` is the default path exactly.

    Without ``state`` every block starts a new stream. With a ``StreamState`` the block starts
    from the averages it holds and leaves its own there, so a stream can span many blocks (one
    per webcam frame, say); ``state.reset()`` starts over. Yields the state in use.
    """
    if not 0.0 <= float(momentum) < 1.0:
        raise ValueError(f"stream smoothing momentum must be in [0, 1), got {momentum}")
    if state is not None and not isinstance(state, StreamState):
        raise TypeError(f"state must be a norms.StreamState, got {type(state).__name__}")
    state = StreamState() if state is None else state
    layers = _instance_layers(model, "stream_statistics")
    with _installed([(m, _Stream(float(momentum), n, state)) for n, m in layers]):
        yield state
