"""Arbitrary style in one forward pass: encoder → statistics transfer (``norms.transfer``) → decoder.

Any painting, no training per style. The frozen VGG-19 encoder (normalised form, up to relu3_1)
maps photo and painting to features; ``norms.transfer.wct`` (Li et al., NeurIPS 2017) or
``norms.transfer.adain`` (Huang & Belongie, ICCV 2017) gives the photo's features the painting's
statistics; a decoder trained only to invert the encoder (``stylize.decoder``) turns them back
into an image.

Multi-level (Li et al. Sec. 3.2): the image goes through relu3_1 → relu2_1 → relu1_1 in turn,
each level transferring and decoding, coarse to fine. Multi-scale: the chain first runs on a
downscaled copy and its upscaled result seeds the full-size run, so the painting's patterns come
out larger relative to the photo (bigger strokes than relu3_1's ≈ 40 px receptive field allows).

Statistics are fixed objects (``StyleStatistics``): computed once per painting (and blend), they
serve a whole folder, video or every tile of a large image. Large images run each level in
overlapping tiles with the whole image's content statistics (summed over the tiles in a first
pass), so tiles agree with the one-pass result (``_level_tiled``); a video averages its frames'
content statistics (``ContentSmoother``). The encoder and decoders can run on onnxruntime
(``use_backend``), the WCT/AdaIN step between them stays in torch.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from norms import transfer

from .tiling import MIN_ARBITRARY_TILE

LEVELS = ("relu3_1", "relu2_1", "relu1_1")  # deepest first: the order of the multi-level chain
METHODS = tuple(transfer.TRANSFERS)  # "wct", "adain"
# Mirror of VGG-19 up to each level (Li et al.'s decoders): (in, out) 3×3 convs, "U" = 2× nearest
# upsampling (no transposed convs: they leave a checkerboard grid).
_PLANS: dict[str, list[Any]] = {
    "relu3_1": [(256, 128), "U", (128, 128), (128, 64), "U", (64, 64), (64, 3)],
    "relu2_1": [(128, 64), "U", (64, 64), (64, 3)],
    "relu1_1": [(64, 3)],
}
_CHANNELS = {"relu1_1": 64, "relu2_1": 128, "relu3_1": 256}


@dataclass
class DecoderConfig:
    """Architecture of a ``Decoder``; stored in its model file."""

    level: str = "relu3_1"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DecoderConfig":
        if not isinstance(d, dict):
            raise ValueError("decoder config must be a JSON object")
        cfg = cls(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(cls)}})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        if self.level not in _PLANS:
            raise ValueError(f"unknown decoder level {self.level!r}; known: {', '.join(LEVELS)}")


class Decoder(nn.Module):
    """Inverts the encoder at one level: N×C×h×w features → N×3×H×W image (0–255)."""

    def __init__(self, config: DecoderConfig | None = None) -> None:
        super().__init__()
        self.config = config or DecoderConfig()
        self.config.validate()
        layers: list[nn.Module] = []
        plan = _PLANS[self.config.level]
        for i, item in enumerate(plan):
            if item == "U":
                layers.append(nn.Upsample(scale_factor=2, mode="nearest"))
                continue
            cin, cout = item
            layers += [nn.ReflectionPad2d(1), nn.Conv2d(cin, cout, 3)]
            if i < len(plan) - 1:
                layers.append(nn.ReLU(inplace=True))
        self.body = nn.Sequential(*layers)

    @property
    def level(self) -> str:
        return self.config.level

    def forward(self, f: Tensor) -> Tensor:  # N×C×h×w -> N×3×(h·2^k)×(w·2^k), 0–255
        return 127.5 + 127.5 * self.body(f)  # unit-scale output: Adam steps fit the weights


# ----------------------------------------------------------------------------- model files

def save_decoder(path: str | Path, decoder: Decoder, metadata: Mapping[str, Any] | None = None,
                 recipe: dict[str, Any] | None = None, half: bool = False) -> Path:
    """A decoder as one safetensors file in the normlab schema (kind ``decoder``)."""
    from engine.checkpoint import save_model

    return save_model(path, decoder.state_dict(), kind="decoder", config=decoder.config.to_dict(),
                      recipe=recipe, half=half, **dict(metadata or {}))


def load_decoder(path: str | Path, device: str | torch.device = "cpu") -> tuple[Decoder, dict[str, Any]]:
    """(decoder in eval mode, file metadata); one-line ``ValueError`` for a wrong or damaged file."""
    from engine.checkpoint import read_model

    tensors, meta = read_model(path, "decoder", validate=DecoderConfig.from_dict, device=device)
    dec = Decoder(DecoderConfig.from_dict(meta["config"]))
    try:
        dec.load_state_dict({k: v.float() for k, v in tensors.items()})
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{path}: weights do not fit a {dec.level} decoder ({first})") from None
    return dec.to(device).eval().requires_grad_(False), meta


SHIPPED_DECODERS = {level: f"decoder_{level}.safetensors" for level in LEVELS}


def shipped_decoder_path(level: str) -> Path:
    """Where the shipped decoder of ``level`` lives (``weights/``)."""
    return Path(__file__).resolve().parent.parent / "weights" / SHIPPED_DECODERS[level]


# ------------------------------------------------------------------------------- statistics

@dataclass
class StyleStatistics:
    """Per level: one statistics object per painting (``MeanCov`` for WCT, ``MeanStd`` for
    AdaIN), plus the blend weights (normalised). Fixed for a whole image, folder or video."""

    method: str
    weights: list[float]
    per_level: dict[str, list[Any]]


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")


class ArbitraryStylizer(nn.Module):
    """Encoder + one decoder per level. ``levels`` (deepest first) chooses the chain."""

    def __init__(self, encoder: nn.Module, decoders: Mapping[str, Decoder]) -> None:
        super().__init__()
        if not decoders:
            raise ValueError("no decoder given")
        self.encoder = encoder
        self.decoders = nn.ModuleDict(dict(decoders))
        self.runtime: OnnxArbitrary | None = None  # onnxruntime sessions (``use_backend``)
        for level, dec in self.decoders.items():
            if dec.level != level:
                raise ValueError(f"decoder for {level} was trained for {dec.level}")

    @property
    def levels(self) -> list[str]:
        return [lv for lv in LEVELS if lv in self.decoders]

    def _encode_taps(self, x: Tensor, taps: Sequence[str]) -> dict[str, Tensor]:
        # N×3×H×W (0–255) -> {tap: N×C×h×w}
        if self.runtime is not None:
            return self.runtime.encode(x, taps)
        return self.encoder(x, list(taps))

    def _encode(self, x: Tensor, level: str) -> Tensor:  # N×3×H×W (0–255) -> N×C×h×w
        return self._encode_taps(x, [level])[level]

    def _decode(self, f: Tensor, level: str) -> Tensor:  # N×C×h×w -> N×3×H×W (0–255)
        if self.runtime is not None:
            return self.runtime.decode(f, level)
        return self.decoders[level](f)

    @torch.no_grad()
    def style_statistics(self, styles: Sequence[Tensor], weights: Sequence[float] | None = None,
                         method: str = "wct", levels: Sequence[str] | None = None,
                         tile: int | None = None) -> StyleStatistics:
        """Statistics of each painting (1×3×H×W, 0–255) at each level of the chain; paintings
        larger than ``tile`` px are encoded in tiles (the same statistics, bounded memory)."""
        _check_method(method)
        if not styles:
            raise ValueError("no style image given")
        weights = [1.0] * len(styles) if weights is None else [float(w) for w in weights]
        if len(weights) != len(styles) or sum(weights) <= 0 or min(weights) < 0:
            raise ValueError(f"style weights must be ≥ 0, one per style, not all 0: {weights}")
        total = sum(weights)
        levels = list(levels or self.levels)
        def stat(f: Tensor) -> Any:
            return feature_statistics(f, method)
        per_level: dict[str, list[Any]] = {lv: [] for lv in levels}
        for s in styles:
            if s.shape[0] != 1:
                raise ValueError("give each style image as 1×3×H×W")
            if tile is not None and max(s.shape[-2:]) > tile:  # a painting beyond the budget
                for lv in levels:
                    per_level[lv].append(self._tiled_statistics(s.float(), lv, method, 1e-5,
                                                                tile))
                continue
            feats = self._encode_taps(s, levels)  # one encoder pass gives every level
            with transfer.one_thread():
                for lv in levels:
                    per_level[lv].append(stat(feats[lv]))
        return StyleStatistics(method, [w / total for w in weights], per_level)

    def _transfer(self, f: Tensor, stats: StyleStatistics, level: str, alpha: float, eps: float,
                  content_stats: Any = None) -> Tensor:
        fn = transfer.TRANSFERS[stats.method]
        with transfer.one_thread() if stats.method == "wct" else contextlib.nullcontext():
            outs = [fn(f, s, eps, content_stats=content_stats) for s in stats.per_level[level]]
        t = outs[0] if len(outs) == 1 else transfer.blend(outs, stats.weights)
        return alpha * t + (1 - alpha) * f

    def _level(self, x: Tensor, stats: StyleStatistics, level: str, alpha: float, eps: float,
               content: "Callable[[Any], Any] | None" = None) -> Tensor:
        """One level of the chain on a whole image: encode, transfer, decode (N×3×H×W)."""
        f = self._encode(x, level)
        with transfer.one_thread():  # small GEMMs and eigh: see norms.transfer.one_thread
            cs = feature_statistics(f, stats.method, eps)
            if content is not None:  # e.g. a video's moving average
                cs = content(cs)
            t = self._transfer(f, stats, level, alpha, eps, content_stats=cs)
        y = self._decode(t.to(f.dtype), level)
        return _fit(y, x.shape[-2:]).clamp(0, 255)

    def _level_tiled(self, x: Tensor, stats: StyleStatistics, level: str, alpha: float,
                     eps: float, tile: int, content: "Callable[[Any], Any] | None" = None,
                     on_tile: Callable[[], None] | None = None) -> Tensor:
        """``_level`` in overlapping tiles with the whole image's content statistics.

        Pass 1 encodes every tile and sums the feature moments over the positions it owns (a
        partition of the image), so the statistics are the whole image's; pass 2 encodes each
        tile again, transfers with those statistics and decodes. The context margin covers the
        encoder + decoder receptive field (≈ 23 px at relu3_1), so kept pixels equal the
        whole-image pass up to float rounding; feathered blending hides what is left."""
        from .tiling import axis_tiles, axis_weights

        if x.shape[0] != 1:
            raise ValueError("tiled stylization takes one image at a time")
        h, w = x.shape[-2:]
        ys = axis_tiles(h, tile, TILE_MARGIN, TILE_FEATHER)
        xs = axis_tiles(w, tile, TILE_MARGIN, TILE_FEATHER)
        cs = self._tiled_statistics(x, level, stats.method, eps, tile)
        if content is not None:
            cs = content(cs)
        out = torch.zeros_like(x)
        wys, wxs = axis_weights(ys, TILE_FEATHER), axis_weights(xs, TILE_FEATHER)
        for ty, wy in zip(ys, wys):
            for tx, wx in zip(xs, wxs):
                xt = x[..., ty.start:ty.end, tx.start:tx.end]
                f = self._encode(xt, level)
                t = self._transfer(f, stats, level, alpha, eps, content_stats=cs)
                y = _fit(self._decode(t.to(f.dtype), level), xt.shape[-2:]).clamp(0, 255)
                y = y[..., ty.keep_start - ty.start:ty.keep_end - ty.start,
                      tx.keep_start - tx.start:tx.keep_end - tx.start]
                wgt = torch.from_numpy(wy[:, None] * wx[None, :]).to(y.device)  # kh×kw
                out[..., ty.keep_start:ty.keep_end, tx.keep_start:tx.keep_end] += y.float() * wgt
                if on_tile is not None:
                    on_tile()
        return out.clamp(0, 255)

    def _tiled_statistics(self, x: Tensor, level: str, method: str, eps: float,
                          tile: int) -> Any:
        """The statistics ``method`` needs of the features of the whole 1×3×H×W ``x`` at
        ``level``, encoded in overlapping tiles: each tile's moments are summed over the feature
        positions it owns (a partition of the image), so they are the whole image's."""
        from .tiling import axis_tiles

        h, w = x.shape[-2:]
        r = _FACTOR[level]
        ys = axis_tiles(h, tile, TILE_MARGIN, TILE_FEATHER)
        xs = axis_tiles(w, tile, TILE_MARGIN, TILE_FEATHER)
        moments: _Moments | None = None
        for i, ty in enumerate(ys):
            for j, tx in enumerate(xs):
                f = self._encode(x[..., ty.start:ty.end, tx.start:tx.end], level)
                (a0, a1), (b0, b1) = _owned(ys, i, h, r), _owned(xs, j, w, r)
                own = f[..., a0 - ty.start // r:a1 - ty.start // r,
                        b0 - tx.start // r:b1 - tx.start // r]
                if moments is None:
                    moments = _Moments(own, full=method == "wct")
                moments.add(own)
        assert moments is not None
        return moments.mean_cov() if method == "wct" else moments.mean_std(eps)

    @torch.no_grad()
    def forward(self, photo: Tensor, stats: StyleStatistics, alpha: float = 1.0,
                scales: Sequence[int] = (1,), eps: float = 1e-5,
                levels: Sequence[str] | None = None,
                progress: Callable[[int, int], None] | None = None,
                tile: int | None = None, smoother: "ContentSmoother | None" = None) -> Tensor:
        """Stylize ``photo`` (N×3×H×W, 0–255) → N×3×H×W (0–255).

        ``scales``: downscaling factors run coarse to fine (e.g. (2, 1)): the result at each
        factor, upscaled, is the input of the next; ``levels`` (default: the statistics' levels,
        deepest first) the multi-level chain; ``alpha`` ∈ [0, 1] blends transferred and original
        features at every level (Li et al. eq. 4). ``tile`` (px): images larger than it run
        each level in overlapping tiles with the whole image's content statistics
        (``_level_tiled``). ``smoother``: content statistics averaged over the frames of a
        stream (``ContentSmoother``; one call per frame, N = 1)."""
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        levels = [lv for lv in LEVELS if lv in (levels or stats.per_level)]
        missing = [lv for lv in levels if lv not in self.decoders or lv not in stats.per_level]
        if missing:
            raise ValueError(f"no decoder or statistics for {', '.join(missing)}")
        scales = sorted({int(s) for s in scales}, reverse=True)
        if not scales or scales[-1] < 1:
            raise ValueError(f"scales must be whole factors ≥ 1, got {list(scales)}")
        if tile is not None and tile < MIN_ARBITRARY_TILE:
            raise ValueError(f"tile must be at least {MIN_ARBITRARY_TILE} px, got {tile}")
        if smoother is not None and photo.shape[0] != 1:
            raise ValueError("a smoothed stream takes one frame per call")
        h, w = photo.shape[-2:]
        x = photo.float()
        sizes = [(max(16, round(h / s)), max(16, round(w / s))) for s in scales]
        tiled = [tile is not None and max(sz) > tile for sz in sizes]
        steps = [len(levels) * (_tile_count(sz, tile) if t else 1) for sz, t in zip(sizes, tiled)]
        total, done = sum(steps), 0

        def step() -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, total)

        for k, (s, size) in enumerate(zip(scales, sizes)):
            if k == 0:
                x = F.interpolate(photo.float(), size=size, mode="area") if s > 1 else photo.float()
            else:  # coarse result, upscaled, seeds the finer pass
                x = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
            for level in levels:
                content = None if smoother is None else \
                    (lambda cs, key=(k, level): smoother.update(key, cs))
                if tiled[k]:
                    x = self._level_tiled(x, stats, level, alpha, eps, int(tile), content,
                                          on_tile=step)
                else:
                    x = self._level(x, stats, level, alpha, eps, content)
                    step()
        if smoother is not None:
            smoother.frames += 1
        return x


_FACTOR = {"relu1_1": 1, "relu2_1": 2, "relu3_1": 4}  # encoder downsampling at each level
# Tiles: the context margin covers the encoder + decoder receptive field of one level (relu3_1:
# ≈ 13 px encoder + ≈ 10 px decoder radius), so kept pixels are those of the whole-image pass;
# multiples of 4 keep every tile on the max-pools' grid.
TILE_MARGIN = 32
TILE_FEATHER = 16


def _tile_count(size: tuple[int, int], tile: int | None) -> int:
    from .tiling import axis_tiles

    return len(axis_tiles(size[0], int(tile), TILE_MARGIN, TILE_FEATHER)) * \
        len(axis_tiles(size[1], int(tile), TILE_MARGIN, TILE_FEATHER))


def _owned(tiles: list, i: int, n: int, r: int) -> tuple[int, int]:
    """Feature rows [a, b) (at downsampling ``r``) that tile ``i`` counts in the whole-image
    statistics: from its kept start to the next tile's, so every position counts once."""
    a = tiles[i].keep_start
    b = tiles[i + 1].keep_start if i + 1 < len(tiles) else None
    return a // r, (n // r if b is None else b // r)


class _Moments:
    """Running channel moments of features seen in parts (tiles), in float64, shifted by the
    first part's mean (so the sums do not cancel): mean and covariance (``full``) or variance."""

    def __init__(self, first: Tensor, full: bool = True) -> None:
        c = first.shape[1]
        self.shift = first.double().mean(dim=(0, 2, 3))  # C
        self.full, self.n = full, 0
        self.s1 = torch.zeros(c, dtype=torch.float64, device=first.device)
        self.s2 = torch.zeros((c, c) if full else (c,), dtype=torch.float64, device=first.device)

    def add(self, f: Tensor) -> None:  # 1×C×h×w
        z = f[0].reshape(f.shape[1], -1).double() - self.shift[:, None]  # C×hw
        self.n += z.shape[1]
        self.s1 += z.sum(dim=1)
        self.s2 += z @ z.T if self.full else (z * z).sum(dim=1)

    def mean_cov(self) -> transfer.MeanCov:
        """Like ``transfer.mean_cov`` of all the parts together (unbiased covariance)."""
        n = max(self.n, 1)
        d = self.s1 / n
        cov = (self.s2 - n * d[:, None] * d[None, :]) / max(n - 1, 1)
        return transfer.MeanCov((self.shift + d)[None, :, None], cov[None])

    def mean_std(self, eps: float) -> transfer.MeanStd:
        """Like ``transfer.mean_std`` of all the parts together (population variance)."""
        n = max(self.n, 1)
        d = self.s1 / n
        var = (self.s2 - n * d * d) / n
        return transfer.MeanStd((self.shift + d).float().view(1, -1, 1, 1),
                                (var + eps).sqrt().float().view(1, -1, 1, 1))


def feature_statistics(f: Tensor, method: str, eps: float = 1e-5, chunk: int = 16384) -> Any:
    """The statistics ``method`` needs of features ``f`` (N×C×H×W; a photo's or a painting's):
    ``MeanStd`` for AdaIN, ``MeanCov`` for WCT. WCT's covariance: mean in float64, centred products as float32
    GEMMs over chunks of ``chunk`` positions summed in float64 — ~2× faster than
    ``transfer.mean_cov``'s float64 GEMM; the matrix roots stay float64 (where the digits
    matter: ``norms.transfer``). Output within ≥ 60 dB of the float64 covariance (tested)."""
    if method != "wct":
        return transfer.mean_std(f, eps)
    n, c, h, w = f.shape
    x = f.reshape(n, c, h * w)
    mean = x.sum(dim=2, dtype=torch.float64).unsqueeze(-1) / (h * w)  # N×C×1
    m32 = mean.float()
    cov = torch.zeros(n, c, c, dtype=torch.float64, device=f.device)
    for i in range(0, h * w, chunk):
        xc = x[:, :, i:i + chunk].float() - m32
        cov += (xc @ xc.transpose(1, 2)).double()
    return transfer.MeanCov(mean, cov / max(h * w - 1, 1))


class ContentSmoother:
    """Exponential moving average of the content statistics of a stream (a video): every
    frame is normalised with ``momentum``·(past average) + (1 − momentum)·(its own), per
    multi-scale step and level, so the whitening (WCT) or normalisation (AdaIN) changes only
    as fast as the average — per-frame statistics react to every object entering the frame,
    which is what flickers. The style statistics stay fixed. ``momentum`` 0 = per frame."""

    def __init__(self, momentum: float = 0.9) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"smoothing momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        self.state: dict[Any, Any] = {}
        self.frames = 0

    def update(self, key: Any, cs: Any) -> Any:
        """The averaged statistics for ``key`` after a frame with statistics ``cs``."""
        old = self.state.get(key)
        if old is not None:
            m = self.momentum
            if isinstance(cs, transfer.MeanCov):
                cs = transfer.MeanCov(m * old.mean + (1 - m) * cs.mean,
                                      m * old.cov + (1 - m) * cs.cov)  # convex: stays PSD
            else:  # average the variance, not σ: a mixture's spread
                var = m * old.std ** 2 + (1 - m) * cs.std ** 2
                cs = transfer.MeanStd(m * old.mean + (1 - m) * cs.mean, var.sqrt())
        self.state[key] = cs
        return cs


def _fit(y: Tensor, size: Sequence[int]) -> Tensor:
    """Crop/pad a decoder output back to ``size`` (odd sizes lose a pixel in the max-pools)."""
    if tuple(y.shape[-2:]) == tuple(size):
        return y
    y = y[..., : size[0], : size[1]]
    ph, pw = size[0] - y.shape[-2], size[1] - y.shape[-1]
    return F.pad(y, (0, pw, 0, ph), mode="replicate") if ph or pw else y


def load_stylizer(encoder: nn.Module, levels: Sequence[str] = LEVELS,
                  paths: Mapping[str, str | Path] | None = None,
                  device: str | torch.device = "cpu") -> ArbitraryStylizer:
    """The encoder with the decoders of ``levels`` (shipped ones unless ``paths`` names files)."""
    decs = {}
    for level in levels:
        if level not in _PLANS:
            raise ValueError(f"unknown level {level!r}; known: {', '.join(LEVELS)}")
        path = Path((paths or {}).get(level) or shipped_decoder_path(level))
        if not path.is_file():
            raise ValueError(f"no decoder for {level}: {path} does not exist (train one with "
                             f"`normlab stylize train-decoder --level {level}`)")
        decs[level], _ = load_decoder(path, device)
    return ArbitraryStylizer(encoder.to(device), decs)


def parse_scales(text: str | Sequence[int]) -> list[int]:
    """"2,1" → [2, 1]; one-line error otherwise."""
    if isinstance(text, str):
        try:
            vals = [int(t) for t in text.replace(" ", "").split(",") if t]
        except ValueError:
            raise ValueError(f"scales must be whole numbers like 2,1, got {text!r}") from None
    else:
        vals = [int(v) for v in text]
    if not vals or min(vals) < 1 or max(vals) > 8:
        raise ValueError(f"scales must be factors from 1 to 8 (e.g. 2,1), got {text!r}")
    return vals



def parse_paintings(spec: str | Mapping[str, float] | Sequence[str]) -> dict[str, float]:
    """Painting files and blend weights: ``"a.jpg"``, ``"a.jpg:0.7,b.jpg:0.3"``, a list of
    paths, or a mapping path → weight. One-line ``ValueError`` for a bad weight or a missing file."""
    if isinstance(spec, Mapping):
        items = [(str(k), float(v)) for k, v in spec.items()]
    else:
        parts = [p.strip() for p in (spec.split(",") if isinstance(spec, str) else spec) if p.strip()]
        items = []
        for part in parts:
            path, weight = part, 1.0
            head, sep, tail = part.rpartition(":")
            if sep and head and not Path(part).is_file():
                try:
                    path, weight = head, float(tail)
                except ValueError:
                    raise ValueError(f"bad style weight in {part[:200]!r}: write path:weight, "
                                     "e.g. a.jpg:0.7,b.jpg:0.3") from None
            items.append((path, weight))
    if not items:
        raise ValueError("no style image given (--style-image)")
    out: dict[str, float] = {}
    for path, weight in items:
        if not (weight >= 0 and weight < float("inf")):
            raise ValueError(f"style weight of {path[:200]} must be a number ≥ 0, got {weight}")
        if not Path(path).is_file():
            raise ValueError(f"style image {path[:200]} does not exist")
        out[path] = out.get(path, 0.0) + weight
    if sum(out.values()) <= 0:
        raise ValueError("style weights are all 0")
    return out


def load_paintings(paintings: Mapping[str, float], longest: int) -> tuple[list[Tensor], list[float]]:
    """The paintings as 1×3×H×W (0–255) tensors with their longest side ``longest`` px."""
    from engine.images import load_image

    return [fit_painting(load_image(p), longest) for p in paintings], list(paintings.values())


def fit_painting(img: "Image.Image", longest: int) -> Tensor:
    """A painting (PIL) as a 1×3×H×W tensor (0–255) with its longest side ``longest`` px."""
    from PIL import Image

    from engine.images import to_tensor

    img = img.convert("RGB")
    s = longest / max(img.size)
    img = img.resize((max(16, round(img.size[0] * s)), max(16, round(img.size[1] * s))),
                     Image.LANCZOS if s < 1 else Image.BICUBIC)
    return to_tensor(img)


def stylize_with_paintings(stylizer: ArbitraryStylizer, image: "Image.Image",
                           paintings: Mapping[str, float], *, method: str = "wct",
                           alpha: float = 1.0, scales: Sequence[int] = (1,),
                           style_size: int | None = None, max_size: int | None = 1024,
                           preserve_color: bool = False, strength: float = 1.0,
                           stats: StyleStatistics | None = None,
                           tile: int | None = None, max_memory: int | None = None,
                           stats_cache: dict | None = None,
                           progress: Callable[[int, int], None] | None = None,
                           refine: int = 0,
                           refine_progress: Callable[[int, int], None] | None = None,
                           refine_styles: Sequence[Tensor] | None = None
                           ) -> "Image.Image":
    """A photo (PIL) in the style of ``paintings`` (path → blend weight), same size out.

    The photo is processed at most ``max_size`` px on its longer side (and scaled back);
    paintings are encoded with their longer side = the processed photo's (``style_size``
    overrides), so a painting's patterns keep their size relative to the picture. ``stats``
    reuses statistics computed once (a folder, a video). Beyond ``max_memory`` (bytes; default
    half of what the process may allocate, see ``stylize.tiling.plan_arbitrary_tile``) or the
    forced ``tile`` size, every level runs in overlapping tiles with the whole image's content
    statistics (``ArbitraryStylizer._level_tiled``): the same look as one pass (≥ 80 dB).
    ``stats_cache``: a dict that keeps painting statistics per painting size across calls (a
    folder of photos of one size encodes the paintings once).

    ``refine``: that many L-BFGS iterations of the Gatys objective (``stylize.optimize``: the
    photo's content at relu3_1, the paintings' Gram matrices, one scale) starting from the
    one-pass result, at the processed size; ``refine_progress(done, total)`` after each chunk;
    ``refine_styles``: the painting tensors when ``stats`` came without ``paintings`` (the UI).
    The one pass puts the painting's colours and textures in place, a few iterations then
    sharpen its strokes toward the optimiser's look at a fraction of its cost."""
    from PIL import Image

    from engine.images import to_image, to_tensor

    from .infer import finish_output, processing_size

    src = image.convert("RGB")
    size = processing_size(src.size, max_size)
    work = src if size == src.size else src.resize(size, Image.LANCZOS)
    device = next(stylizer.parameters()).device
    from .tiling import plan_arbitrary_tile

    def plan(w: int, h: int) -> int | None:
        return plan_arbitrary_tile(w, h, device=device, max_memory=max_memory, tile=tile)

    photo_tile = plan(*work.size)
    key = (tuple(paintings.items()), method, style_size or max(work.size))
    if stats is None and stats_cache is not None:
        stats = stats_cache.get(key)
    if stats is None:
        styles, weights = load_paintings(paintings, style_size or max(work.size))
        tiles = [t for t in (plan(s.shape[-1], s.shape[-2]) for s in styles) if t]
        stats = stylizer.style_statistics([t.to(device) for t in styles], weights, method,
                                          tile=min(tiles, default=None))
        if stats_cache is not None:
            stats_cache[key] = stats
    if refine < 0 or refine > 10_000:
        raise ValueError(f"--refine must be 0–10000 iterations, got {refine}")
    if refine and photo_tile is not None:
        raise ValueError(f"--refine optimises the whole {work.size[0]}×{work.size[1]} image at "
                         "once, which does not fit the memory budget; lower --max-size")
    x = to_tensor(work).to(device)
    out = stylizer(x, stats, alpha=alpha, scales=scales, progress=progress, tile=photo_tile)
    if refine:
        if paintings:
            styles, weights = load_paintings(paintings, style_size or max(work.size))
        elif refine_styles:
            styles, weights = list(refine_styles), [1.0] * len(refine_styles)
        else:
            raise ValueError("refine needs the paintings (or refine_styles) to optimise toward")
        out = refine_output(stylizer.encoder, x, out, styles, weights, refine, refine_progress)
    result = to_image(out.cpu())
    if result.size != src.size:
        result = result.resize(src.size, Image.BICUBIC)
    return finish_output(src, result, preserve_color, strength)


def refine_output(encoder: nn.Module, photo: Tensor, out: Tensor, styles: Sequence[Tensor],
                  weights: Sequence[float], iterations: int,
                  progress: Callable[[int, int], None] | None = None) -> Tensor:
    """``iterations`` of the optimiser (``stylize.optimize``, its default weights, one scale)
    from ``out`` toward ``photo``'s content and the ``styles``' Gram statistics blended by
    ``weights`` (images 1×3×H×W, 0–255; each painting at the size it was encoded at)."""
    from .optimize import OptimizeConfig, optimize

    cfg = OptimizeConfig(size=None, scales=[1], iterations=[int(iterations)],
                         style_size=max(max(s.shape[-2:]) for s in styles))
    dev = photo.device
    with torch.enable_grad():
        res = optimize(photo.float(), [s.to(dev) for s in styles], encoder, cfg, weights,
                       progress=(lambda d, t, _: progress(d, t)) if progress else None,
                       init=out.float())
    return res.image


# --------------------------------------------------------------------- onnxruntime backend

ARBITRARY_BACKENDS = ("auto", "torch", "onnxruntime")
ONNX_EXPORT_FORMAT = 1  # bump when the exported graphs change (part of the cache key)


class _EncoderTaps(nn.Module):
    """The encoder up to ``taps[-1]`` as a module with tuple outputs (for ONNX export)."""

    def __init__(self, encoder: nn.Module, taps: Sequence[str]) -> None:
        super().__init__()
        self.encoder, self.taps = encoder, list(taps)

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:  # N×3×H×W -> per tap N×C×h×w
        out = self.encoder(x, self.taps)
        return tuple(out[t] for t in self.taps)


def _encoder_taps(level: str) -> list[str]:
    """Taps the exported encoder graph of ``level`` gives: every level up to it (shallow
    first), so one run of the deepest graph serves the style statistics of all levels."""
    return [lv for lv in reversed(LEVELS) if _FACTOR[lv] <= _FACTOR[level]]


def stylizer_sha(stylizer: ArbitraryStylizer) -> str:
    """Hash of the encoder's and decoders' weights and the export settings (the cache key)."""
    import hashlib
    import json

    from .deploy import export_settings

    h = hashlib.sha256(json.dumps({**export_settings(), "arbitrary": ONNX_EXPORT_FORMAT},
                                  sort_keys=True).encode())
    for k, v in stylizer.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def export_arbitrary_onnx(stylizer: ArbitraryStylizer, folder: str | Path) -> Path:
    """Write the encoder (one graph per level: ``enc_<level>.onnx``, outputs every tap up to
    it) and the decoders (``dec_<level>.onnx``) into ``folder`` as ONNX (fp32, opset
    ``stylize.deploy.ONNX_OPSET``, N, H and W dynamic). The WCT/AdaIN step between them stays
    in torch: it is global (covariances, eigendecompositions), not a convolution graph."""
    import copy
    import warnings

    from .deploy import ONNX_OPSET

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    enc = copy.deepcopy(stylizer.encoder).float().cpu().eval()
    x = torch.rand(1, 3, 64, 64) * 255
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's tracer notices
        for level in stylizer.levels:
            taps = _encoder_taps(level)
            axes = {"x": {0: "n", 2: "h", 3: "w"}, **{t: {0: "n", 2: "fh", 3: "fw"} for t in taps}}
            torch.onnx.export(_EncoderTaps(enc, taps), (x,), str(folder / f"enc_{level}.onnx"),
                              dynamo=False, opset_version=ONNX_OPSET, input_names=["x"],
                              output_names=taps, dynamic_axes=axes)
            dec = copy.deepcopy(stylizer.decoders[level]).float().cpu().eval()
            f = torch.rand(1, _CHANNELS[level], 16, 16)
            torch.onnx.export(dec, (f,), str(folder / f"dec_{level}.onnx"), dynamo=False,
                              opset_version=ONNX_OPSET, input_names=["f"], output_names=["y"],
                              dynamic_axes={"f": {0: "n", 2: "h", 3: "w"},
                                            "y": {0: "n", 2: "oh", 3: "ow"}})
    return folder


class OnnxArbitrary:
    """onnxruntime sessions for an exported encoder and decoders (``export_arbitrary_onnx``):
    ``encode``/``decode`` take and give torch tensors like the modules they replace."""

    def __init__(self, folder: str | Path, levels: Sequence[str], threads: int | None = None):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or torch.get_num_threads()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3
        # torch runs the WCT/AdaIN step between the graphs: onnxruntime's workers must not
        # spin-wait for more work meanwhile (they took the cores from torch's GEMMs and eigh)
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        folder = Path(folder)
        self.enc, self.dec = {}, {}
        for level in levels:
            for kind, store in (("enc", self.enc), ("dec", self.dec)):
                path = folder / f"{kind}_{level}.onnx"
                try:
                    store[level] = ort.InferenceSession(str(path), opts,
                                                        providers=["CPUExecutionProvider"])
                except Exception as exc:  # onnxruntime raises its own error types
                    raise ValueError(f"{path} is not an ONNX graph onnxruntime can load "
                                     f"({str(exc).strip().splitlines()[0][:200]})") from None

    def encode(self, x: Tensor, taps: Sequence[str]) -> dict[str, Tensor]:
        """{tap: N×C×h×w} of N×3×H×W ``x`` (0–255), from the graph of the deepest tap."""
        deepest = max(taps, key=_FACTOR.__getitem__)
        a = np.ascontiguousarray(x.detach().float().cpu().numpy())
        outs = self.enc[deepest].run(list(taps), {"x": a})  # its outputs: every tap up to it
        return {t: torch.from_numpy(o).to(x.device) for t, o in zip(taps, outs)}

    def decode(self, f: Tensor, level: str) -> Tensor:
        """N×3×H×W (0–255) of ``level`` features N×C×h×w."""
        a = np.ascontiguousarray(f.detach().float().cpu().numpy())
        return torch.from_numpy(self.dec[level].run(None, {"f": a})[0]).to(f.device)


@torch.no_grad()
def _verify(stylizer: ArbitraryStylizer, runtime: OnnxArbitrary) -> None:
    """The exported graphs give the torch modules' outputs (to float rounding) on a test input."""
    g = torch.Generator().manual_seed(0)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 9, 11, generator=g), size=(68, 84),
                                        mode="bicubic", align_corners=False).clamp(0, 1) * 255
    for level in stylizer.levels:
        f = stylizer.encoder(x, [level])[level]
        worst = float((runtime.encode(x, [level])[level] - f).abs().max() /
                      f.abs().max().clamp_min(1e-6))
        y = stylizer.decoders[level](f)
        worst = max(worst, float((runtime.decode(f, level) - y).abs().max() / 255))
        if not worst < 1e-3:
            raise ValueError(f"the onnxruntime export of the {level} encoder/decoder differs from "
                             f"torch (relative error {worst:.2g}); use --backend torch")


def onnx_runtime(stylizer: ArbitraryStylizer) -> OnnxArbitrary:
    """onnxruntime sessions for ``stylizer``, from the export cache (``stylize.deploy.cache_dir``,
    keyed by the weights' hash) or exported, verified against torch and cached now."""
    import os
    import shutil
    import tempfile

    from .deploy import cache_dir

    root = cache_dir()
    final = root / f"arbitrary-{stylizer_sha(stylizer)}"
    levels = stylizer.levels
    if all((final / f"{k}_{lv}.onnx").is_file() for lv in levels for k in ("enc", "dec")):
        try:
            return OnnxArbitrary(final, levels)
        except ValueError:  # a damaged entry (truncated, overwritten): export again
            shutil.rmtree(final, ignore_errors=True)
    if not all((final / f"{k}_{lv}.onnx").is_file() for lv in levels for k in ("enc", "dec")):
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(dir=root, prefix=".arbitrary-"))
        try:
            export_arbitrary_onnx(stylizer, tmp)
            _verify(stylizer, OnnxArbitrary(tmp, levels))
            if final.exists():  # an incomplete entry (other levels, a crash): replace it
                shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return OnnxArbitrary(final, levels)


def resolve_arbitrary_backend(backend: str, device: str | torch.device = "cpu") -> str:
    """``torch`` or ``onnxruntime`` for the arbitrary path: ``auto`` takes onnxruntime on CPU
    when it is installed (measured faster: ``stylize bench --style-image``), torch on a GPU.
    ``compiled`` is the feed-forward path's; here it is refused with one line."""
    dev = torch.device(device)
    if backend == "compiled":
        raise ValueError("--backend compiled is not available with --style-image; use auto, "
                         "torch or onnxruntime")
    if backend not in ARBITRARY_BACKENDS:
        raise ValueError(f"--backend must be one of {', '.join(ARBITRARY_BACKENDS)}, "
                         f"got {backend!r}")
    if backend == "torch" or (backend == "auto" and dev.type != "cpu"):
        return "torch"
    if dev.type != "cpu":
        raise ValueError("--backend onnxruntime runs on the CPU; use --device cpu or "
                         "--backend torch")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if backend == "onnxruntime":
            raise ValueError("--backend onnxruntime needs the onnxruntime package") from None
        return "torch"
    return "onnxruntime"


def use_backend(stylizer: ArbitraryStylizer, backend: str = "auto",
                device: str | torch.device = "cpu") -> ArbitraryStylizer:
    """``stylizer`` running its encoder and decoders on ``backend`` (see
    ``resolve_arbitrary_backend``); the WCT/AdaIN step always runs in torch."""
    chosen = resolve_arbitrary_backend(backend, device)
    stylizer.runtime = onnx_runtime(stylizer) if chosen == "onnxruntime" else None
    return stylizer
