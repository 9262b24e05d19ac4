"""Stylize any size in bounded memory with the look of the whole-image pass.

Style networks (Johnson TransformerNet) are streamed (``stylize_streamed``, below): stage by
stage in strips of rows with whole-image statistics at every norm, equal to the whole-image
pass (≥ 95 dB) in ~6·C bytes per pixel. The thumbnail-statistics tiles described next (URST)
remain for networks of another layout and for explicit use of ``stylize_tiled``.

Per-tile instance statistics change the look of every tile (tiling a 4000×4000 photo at 512 px
gave 13.7 dB PSNR against the untiled result). Thumbnail Instance Normalization (Chen et al.,
"Towards Ultra-Resolution Neural Style Transfer via Thumbnail Instance Normalization", AAAI 2022,
URST) fixes that: capture every layer's per-instance statistics on a thumbnail of the whole image,
then run overlapping tiles with those statistics frozen (``norms.capture_statistics`` /
``norms.use_statistics``). What is left at tile borders is the receptive field seeing reflection
padding instead of the neighbours; a discarded context margin plus feathered (linear) blending
over the overlap removes it (≥ 46 dB against the untiled pass when the statistics are exact).

The statistics are exact when the thumbnail is the image itself, which the budget allows whenever
the whole image would fit (forced ``tile``). Beyond that the thumbnail is the largest that fits:
statistics of a downscaled image differ by a few percent per layer and that compounds through 15
norm layers (candy_bin, 768 px photo: 2× smaller thumbnail → 22 dB against untiled, still the same
colours; per-tile statistics → ~13 dB and a different palette). Re-estimating full-resolution
statistics from the tiles in one extra pass made it worse (upstream errors compound), so it is not
done.

Memory: the network's activations are about ``activation_bytes_per_pixel`` bytes per input pixel
(measured), so an image is tiled when that exceeds the budget, with the largest tile that fits.
The output is assembled strip by strip into a ``uint8`` array: beyond the tile, only the input
and output images (3 bytes per pixel each) and one float strip are held.
"""
from __future__ import annotations

import contextlib
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

if TYPE_CHECKING:  # the memory planner is torch-free: a cached ONNX run plans without torch
    import torch

    from .model import StyleConfig

# Peak RSS growth of one fp32 inference-mode pass of the 32-channel TransformerNet on CPU, per
# input pixel: 1061 B at 512², 967 B at 1024², 1024–1155 B at 768² with or without frozen
# statistics (candy_bin, `resource.ru_maxrss` in a fresh process). Rounded up; it scales with
# the channel width.
_FP32_BYTES_PER_PIXEL = 1250.0
# channels_last + bf16 autocast on a CPU without native bf16 (AVX2 only) keeps fp32 copies and
# reorder buffers: 5501 B/px measured at 1024².
_CPU_BF16_FACTOR = 5.0
# Input and output images held while tiling: uint8 arrays and their PIL images (4 B/px each).
_IMAGE_BYTES_PER_PIXEL = 16.0
THUMBNAIL_SIDE = 1024  # URST captures statistics at about this size (longest side)
MIN_TILE = 64


def _device_type(device: "torch.device | str") -> str:
    """"cpu", "cuda", ... of a device or its name, without importing torch."""
    t = getattr(device, "type", None)
    return t if isinstance(t, str) else str(device).split(":")[0].strip().lower()


def activation_bytes_per_pixel(config: "StyleConfig | int", device: "torch.device | str" = "cpu",
                               fast: bool = False) -> float:
    """Estimated peak activation memory of one forward pass, in bytes per input pixel
    (``config``: a ``StyleConfig`` or its ``base_channels``)."""
    channels = config if isinstance(config, int) else config.base_channels
    b = _FP32_BYTES_PER_PIXEL * channels / 32
    if fast and _device_type(device) == "cpu":
        b *= _CPU_BF16_FACTOR
    return b


def default_memory_budget(device: "torch.device | str" = "cpu") -> int:
    """Bytes the stylization may use: half of what this process may still allocate on CPU (the
    host's available RAM, a cgroup ``memory.max`` and ``ulimit -v``, whichever is tightest: see
    ``engine.devices.host_memory_available``), 80 % of the free memory of the GPU. Used when
    the user gives no ``max_memory``."""
    if _device_type(device) == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info(torch.device(device))
        return int(free * 0.8)
    from engine.devices import host_memory_available

    return int(host_memory_available()[0] * 0.5)


def max_image_pixels(max_memory: int | None = None, device: torch.device | str = "cpu") -> int:
    """The largest image (pixels) worth decoding for tiled stylization: its buffers (input and
    output, ``_IMAGE_BYTES_PER_PIXEL``) must fit the host-memory budget, ``max_memory`` on CPU or
    ``default_memory_budget("cpu")`` otherwise; never below ``engine.images.MAX_PIXELS``, so the
    memory planner, not the decoder, explains a budget that is too small."""
    from engine.images import MAX_PIXELS

    host = int(max_memory) if (max_memory is not None and _device_type(device) == "cpu") \
        else default_memory_budget("cpu")
    return max(MAX_PIXELS, int(host / _IMAGE_BYTES_PER_PIXEL))


_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 2**10, "kib": 2**10, "m": 2**20, "mb": 2**20,
          "mib": 2**20, "g": 2**30, "gb": 2**30, "gib": 2**30, "t": 2**40, "tb": 2**40}


def parse_memory(text: str | int | float) -> int:
    """``"2G"``, ``"1.5 GB"``, ``"512M"`` or a number of bytes → bytes; ``ValueError`` otherwise."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-zA-Z]*)\s*", str(text))
        if not m or m.group(2).lower() not in _UNITS:
            raise ValueError(f"memory limit {text!r} is not a size; write e.g. 2G, 1.5GB or 512M")
        value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"memory limit must be positive, got {text!r}")
    return int(value)


def _process_rss() -> int:
    import psutil

    return int(psutil.Process().memory_info().rss)


@dataclass(frozen=True)
class MemoryPlan:
    """How an image will be processed: untiled (``tile`` None) or in tiles of ``tile`` px, with
    statistics captured on a thumbnail of ``thumbnail_side`` px (longest side)."""

    tile: int | None
    thumbnail_side: int
    activation_budget: int  # bytes allowed for one forward pass


def plan_memory(width: int, height: int, config: "StyleConfig | int", *,
                device: "torch.device | str" = "cpu",
                max_memory: int | None = None, tile: int | None = None,
                fast: bool = False) -> MemoryPlan:
    """Choose untiled or tiled processing for a ``width``×``height`` image.

    ``max_memory`` (bytes; default ``default_memory_budget``) bounds the whole process on CPU
    (what is already resident counts) and the device memory on GPU. An explicit ``tile`` is used
    as given (when the image is larger than it).
    """
    dev = _device_type(device)
    bpp = activation_bytes_per_pixel(config, dev, fast)
    budget = default_memory_budget(device) if max_memory is None else int(max_memory)
    if dev == "cpu":
        resident = _process_rss() if max_memory is not None else 0
        budget -= resident + int(_IMAGE_BYTES_PER_PIXEL * width * height)
    min_need = int(bpp * MIN_TILE * MIN_TILE * 4)  # a 128 px tile
    if budget < min_need:
        if max_memory is None:
            from engine.devices import host_memory_available

            have = f" (limited by {host_memory_available()[1]})" if dev == "cpu" else ""
        else:
            have = f" (given {max_memory / 2**20:.0f} MB)"
        raise ValueError(f"not enough memory to stylize a {width}×{height} image{have}: the "
                         f"image buffers and a minimal tile need about "
                         f"{(max(0, (max_memory or 0) - budget) + min_need) / 2**20:.0f} MB; "
                         "raise the memory limit or downscale (max size)")
    fit_side = int(math.sqrt(budget / bpp)) // 4 * 4
    # The thumbnail is as large as the budget allows, up to the image itself: statistics of a
    # downscaled image differ (measured on amber.jpg at 768 px, candy_bin: thumbnail 768 px →
    # 77.6 dB against untiled, 384 px → 22.2 dB, 192 px → 17.3 dB), so only a full-size capture
    # keeps ≥ 30 dB; larger images get the biggest thumbnail that fits (URST uses ~1024 px).
    scale = min(1.0, math.sqrt(budget / (bpp * width * height)))
    thumb = max(min(max(width, height), MIN_TILE), int(max(width, height) * scale) // 4 * 4)
    if tile is not None:
        if tile < MIN_TILE:
            raise ValueError(f"tile must be at least {MIN_TILE} px, got {tile}")
        return MemoryPlan(tile if max(width, height) > tile else None, thumb, budget)
    if width * height * bpp <= budget:
        return MemoryPlan(None, thumb, budget)
    # tiles overlap, so bigger is cheaper (beyond 2048 px the overlap is < 10 %); then balance:
    # as many tiles as the largest size needs, each as small as that count allows
    top = max(2 * MIN_TILE, min(2048, fit_side))
    margin, feather = tile_margins(top)
    lost = 2 * margin + feather  # overlap between neighbours
    n = max(1, math.ceil((max(width, height) - lost) / (top - lost)))
    balanced = -(-(max(width, height) + (n - 1) * lost) // n) + 3  # +3: starts snap to 4 px
    return MemoryPlan(max(2 * MIN_TILE, min(top, -(-balanced // 4) * 4)), thumb, budget)


@dataclass(frozen=True)
class AxisTile:
    """One tile along an axis: the pixels fed to the network [start, end) and the part of its
    output that is used [keep_start, keep_end) (the rest is context for the receptive field)."""

    start: int
    end: int
    keep_start: int
    keep_end: int


def tile_margins(tile: int) -> tuple[int, int]:
    """(context margin, feather width) in px for a tile size: both multiples of 4, 1/16 of the
    tile, between 8 and 32 px. The net's receptive field is about ±54 px, but its influence
    decays fast: 32 + 32 px keeps tiled vs untiled above 30 dB."""
    m = min(32, max(8, tile // 16 // 4 * 4))
    return m, m


def axis_tiles(n: int, tile: int, margin: int | None = None,
               feather: int | None = None) -> list[AxisTile]:
    """Tiles covering ``[0, n)``: starts are multiples of 4 so every tile sees the stride-2
    sampling grid of the whole image; neighbours' kept parts overlap by at least ``feather``."""
    if n <= tile:
        return [AxisTile(0, n, 0, n)]
    dm, df = tile_margins(tile)
    margin = dm if margin is None else margin
    feather = df if feather is None else feather
    tile = tile // 4 * 4
    step = (tile - 2 * margin - feather) // 4 * 4
    if step <= 0:
        raise ValueError(f"tile {tile} px is too small for a {margin} px margin and {feather} px "
                         "blend")
    last = (n - tile) // 4 * 4
    starts = list(range(0, last, step)) + [last]
    out = []
    for s in starts:
        e = n if s == last else s + tile
        out.append(AxisTile(s, e, s + margin if s > 0 else 0, e - margin if e < n else n))
    return out


def axis_weights(tiles: list[AxisTile], feather: int) -> list[np.ndarray]:
    """Per tile, the blend weight of each kept pixel (length ``keep_end − keep_start``): linear
    ramps over ``feather`` px where a neighbour overlaps, normalised so that at every position the
    weights of all tiles sum to exactly 1 (a partition of unity, so no weight map is needed)."""
    n = tiles[-1].keep_end
    raw = []
    for i, t in enumerate(tiles):
        k = t.keep_end - t.keep_start
        w = np.ones(k, dtype=np.float64)
        r = (np.arange(k) + 0.5) / max(feather, 1)
        if i > 0:
            w = np.minimum(w, r)
        if i < len(tiles) - 1:
            w = np.minimum(w, r[::-1])
        raw.append(w)
    total = np.zeros(n)
    for t, w in zip(tiles, raw):
        total[t.keep_start:t.keep_end] += w
    return [(w / total[t.keep_start:t.keep_end]).astype(np.float32) for t, w in zip(tiles, raw)]


@contextlib.contextmanager
def thumbnail_statistics(net: torch.nn.Module, thumbnail: torch.Tensor,
                         run: Callable[[torch.Tensor], torch.Tensor]) -> Iterator[None]:
    """Within the block, every norm of ``net`` uses the per-instance statistics of ``thumbnail``
    (1×3×h×w, 0–255) instead of its input's (URST's Thumbnail Instance Normalization)."""
    import norms

    with norms.capture_statistics(net) as bank:
        run(thumbnail)
    with norms.use_statistics(net, bank):
        yield


def make_thumbnail(rgb: np.ndarray, side: int) -> torch.Tensor:
    """H×W×3 uint8 → 1×3×h×w float (0–255), longest side ``side`` (area-averaging downscale);
    the image itself when it is not larger."""
    import torch
    from PIL import Image

    h, w = rgb.shape[:2]
    if max(h, w) > side:
        s = side / max(h, w)
        img = Image.fromarray(rgb).resize((max(16, round(w * s)), max(16, round(h * s))),
                                          Image.LANCZOS)
        rgb = np.asarray(img)
    return torch.from_numpy(np.array(rgb, dtype=np.float32)).permute(2, 0, 1).unsqueeze(0)


def stylize_tiled(net: torch.nn.Module, rgb: np.ndarray, run: Callable[[torch.Tensor], torch.Tensor],
                  *, tile: int, thumbnail_side: int = THUMBNAIL_SIDE,
                  device: torch.device | str = "cpu", progress: Callable[[int, int], None] | None = None,
                  bar: bool = True) -> np.ndarray:
    """Stylize an H×W×3 ``uint8`` image in overlapping tiles with thumbnail statistics.

    ``run`` maps a 1×3×h×w float tensor (0–255, on ``device``) to the network's output.
    ``progress(done, total)`` is called after every tile; ``bar`` shows a tqdm bar over tiles
    (after 2 s). Returns the H×W×3 ``uint8`` result, rounded as ``engine.images.to_image`` does.
    """
    import torch
    from tqdm.auto import tqdm

    h, w = rgb.shape[:2]
    margin, feather = tile_margins(tile)
    ys, xs = axis_tiles(h, tile, margin, feather), axis_tiles(w, tile, margin, feather)
    wys, wxs = axis_weights(ys, feather), axis_weights(xs, feather)
    out = np.empty((h, w, 3), dtype=np.uint8)
    total = len(ys) * len(xs)
    dev = torch.device(device)
    done = 0
    with contextlib.ExitStack() as stack:
        pbar = stack.enter_context(tqdm(total=total, desc="tiles", unit="tile", delay=2.0,
                                        leave=False, disable=not bar))
        stack.enter_context(thumbnail_statistics(net, make_thumbnail(rgb, thumbnail_side).to(dev),
                                                 run))
        acc_lo, acc = 0, np.zeros((0, w, 3), dtype=np.float32)  # rows [acc_lo, acc_lo+len)
        for i, (ty, wy) in enumerate(zip(ys, wys)):
            if ty.keep_end > acc_lo + len(acc):  # extend the strip down to this row's end
                grow = ty.keep_end - acc_lo - len(acc)
                acc = np.concatenate([acc, np.zeros((grow, w, 3), dtype=np.float32)])
            for tx, wx in zip(xs, wxs):
                x = torch.from_numpy(np.array(rgb[ty.start:ty.end, tx.start:tx.end]))  # copy: rgb
                x = x.to(dev).permute(2, 0, 1).unsqueeze(0).float()  # may be read-only; 1×3×th×tw
                y = run(x)[0, :, ty.keep_start - ty.start:ty.keep_end - ty.start,
                           tx.keep_start - tx.start:tx.keep_end - tx.start]
                y = y.float().cpu().permute(1, 2, 0).numpy()  # kh×kw×3
                acc[ty.keep_start - acc_lo:ty.keep_end - acc_lo, tx.keep_start:tx.keep_end] += \
                    y * (wy[:, None, None] * wx[None, :, None])
                done += 1
                pbar.update(1)
                if progress is not None:
                    progress(done, total)
            final = ys[i + 1].keep_start if i + 1 < len(ys) else h  # no later tile touches rows above
            k = final - acc_lo
            out[acc_lo:final] = np.clip(np.round(acc[:k]), 0, 255).astype(np.uint8)
            acc, acc_lo = acc[k:], final
    return out


# ---- exact streaming: whole-image statistics in bounded memory --------------------------------
#
# Why the thumbnail path lost the look (16.5 dB on a 3000×2000 photo at 1 GB): the budget left
# room for a ~780 px thumbnail, ~4× smaller than the photo. Instance statistics are not scale
# invariant — a downscaled photo has less high-frequency energy, so every layer's variance is
# lower and the error compounds through 15 norm layers (measured on 768 px: 2× smaller → 22 dB,
# 4× → 17 dB). Only whole-image statistics keep the look. The network is a chain of local
# operators (convolutions) and per-image statistics, so it can run stage by stage over the
# whole image: each convolution is applied in strips of rows (with the rows of its receptive
# field, reflection at the image's edges) into a full-size array of its output, while the next
# norm's statistics are summed over the strips; the next stage reads that array through the
# norm (now with exact whole-image statistics) and ReLU. The result equals the whole-image pass
# up to float rounding, holding only stage outputs (≤ 6·C bytes per pixel for C base channels,
# 192 B/px for the shipped models, against ~1250 B/px for a whole-image pass) plus one strip;
# stage outputs go to a temporary file when even they exceed the budget.

def streamable(net: "torch.nn.Module") -> bool:
    """Whether ``net`` has the Johnson TransformerNet layout ``stylize_streamed`` walks."""
    names = ("conv1", "in1", "conv2", "in2", "conv3", "in3", "deconv1", "in4", "deconv2",
             "in5", "deconv3")
    cfg = getattr(net, "config", None)
    return cfg is not None and all(hasattr(net, n) for n in names) and all(
        hasattr(net, f"res{i}") for i in range(1, getattr(cfg, "num_residual", 0) + 1))


def streamed_storage_bytes_per_pixel(config: "StyleConfig | int") -> float:
    """Bytes per input pixel of the stage outputs ``stylize_streamed`` keeps at its peak (two
    stage outputs of 4·C and 2·C bytes per pixel, rounded up to 8·C)."""
    channels = config if isinstance(config, int) else config.base_channels
    return 8.0 * channels


def _reflect(idx: np.ndarray, n: int) -> np.ndarray:
    """ReflectionPad2d's index map (the edge is not repeated)."""
    idx = np.where(idx < 0, -idx, idx)
    return np.where(idx >= n, 2 * (n - 1) - idx, idx)


class _Stage:
    """A full-size stage output (C channels × H rows × W, float32) whose next norm's per-instance
    statistics are summed strip by strip as it is written. Rows are stored contiguously (H×C×W)
    in RAM or, with a ``folder``, in a temporary file read and written with pread/pwrite (not
    mapped: its pages stay out of the process's resident memory)."""

    def __init__(self, shape: tuple[int, ...], norm: "torch.nn.Module | None", folder: str | None):
        import os
        import tempfile

        self.shape = shape  # 1×C×H×W, as the network sees it
        _, c, h, w = shape
        self.row_bytes = c * w * 4
        self.fd = None
        if folder is None:
            self.data = np.empty((h, c, w), dtype=np.float32)
        else:
            self.data = None
            fd, name = tempfile.mkstemp(dir=folder, suffix=".f32")
            os.unlink(name)  # freed when closed, whatever happens
            self.fd = fd
        self.norm = norm
        self.sums: dict[str, tuple] | None = None
        self.count = 0

    def __del__(self) -> None:
        if self.fd is not None:
            import os

            os.close(self.fd)
            self.fd = None

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """1×C×len(idx)×W float32 of the rows ``idx`` (any order, repeats allowed)."""
        import os

        lo, hi = int(idx.min()), int(idx.max()) + 1
        if self.data is not None:
            block = self.data[lo:hi]
        else:
            raw = os.pread(self.fd, (hi - lo) * self.row_bytes, lo * self.row_bytes)
            block = np.frombuffer(raw, dtype=np.float32).reshape(hi - lo, self.shape[1],
                                                                 self.shape[3])
        return np.ascontiguousarray(block[idx - lo].transpose(1, 0, 2))[None]

    def write(self, r0: int, y: "torch.Tensor") -> None:
        a = y.float().cpu().numpy()[0].transpose(1, 0, 2)  # r×C×W
        if self.data is not None:
            self.data[r0:r0 + a.shape[0]] = a
        else:
            import os

            buf = np.ascontiguousarray(a).tobytes()
            if os.pwrite(self.fd, buf, r0 * self.row_bytes) != len(buf):
                raise OSError("short write to a temporary file (disk full?)")
        if self.norm is None:
            return
        import norms

        # every per-instance layer inside the norm (IBN's IN half, a conditional layer, ...)
        # records the statistics of what it sees in this strip: summed with pixel counts
        with norms.capture_statistics(self.norm) as bank:
            self.norm(y)
        n = a.shape[0] * a.shape[2]
        if self.sums is None:
            self.sums = {}
        for name, st in bank.items():
            m, v = st.mean.double().cpu().numpy(), st.var.double().cpu().numpy()
            s1, s2 = self.sums.get(name, (0.0, 0.0))
            self.sums[name] = (s1 + n * m, s2 + n * (v + m * m))
        self.count += n

    def stats(self) -> dict:
        """{layer name: InstanceStats} of the whole stage output, per instance layer of the
        norm (empty for BN-like norms)."""
        import torch

        from norms.statistics import InstanceStats

        out = {}
        for name, (s1, s2) in (self.sums or {}).items():
            mean = s1 / self.count
            var = np.maximum(s2 / self.count - mean * mean, 0.0)
            out[name] = InstanceStats(torch.from_numpy(mean).float(), torch.from_numpy(var).float())
        return out


def stylize_streamed(net: "torch.nn.Module", rgb: np.ndarray, *, rows: int = 256,
                     device: "torch.device | str" = "cpu", on_disk: bool = False,
                     progress: Callable[[int, int], None] | None = None,
                     bar: bool = True) -> np.ndarray:
    """Stylize an H×W×3 ``uint8`` image exactly as the whole-image pass does (whole-image
    statistics at every norm), stage by stage in strips of about ``rows`` output rows (see the
    comment above). ``on_disk`` keeps the stage outputs in temporary files. Returns the H×W×3
    ``uint8`` result, rounded as ``engine.images.to_image`` does."""
    import tempfile

    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    import norms

    from .model import _SKIP_PAD

    dev = torch.device(device)
    h0, w0 = rgb.shape[:2]
    ph, pw = max(-h0 % 4, 16 - h0), max(-w0 % 4, 16 - w0)
    if ph or pw:  # TransformerNet.forward's padding (bottom/right, reflection)
        mode = "reflect" if ph < h0 and pw < w0 else "edge"
        rgb = np.pad(rgb, ((0, ph), (0, pw), (0, 0)), mode=mode)
    H, W = rgb.shape[:2]
    cfg = net.config
    blocks = [getattr(net, f"res{i}") for i in range(1, cfg.num_residual + 1)]
    # (conv, its input's norm or None, the output's norm, output scale, residual-add input)
    total_steps = 0
    with contextlib.ExitStack() as stack:
        folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="normlab-stream-")) \
            if on_disk else None
        pbar = stack.enter_context(tqdm(total=None, desc="stylize (streamed)", unit="strip",
                                        delay=2.0, leave=False, disable=not bar))
        done = [0]

        def image_rows(idx: np.ndarray) -> "torch.Tensor":
            x = torch.from_numpy(np.ascontiguousarray(rgb[idx])).to(dev)
            return x.permute(2, 0, 1).unsqueeze(0).float()  # 1×3×r×W

        def reader(stage: _Stage, relu: bool = True, add: "_Stage | None" = None):
            bank = stage.stats()

            def read(idx: np.ndarray) -> "torch.Tensor":
                t = torch.from_numpy(stage.rows(idx)).to(dev)
                with norms.use_statistics(stage.norm, bank) if bank else contextlib.nullcontext():
                    t = stage.norm(t)
                if relu:
                    t = torch.relu(t)
                if add is not None:
                    t = t + add_read(add, idx)
                return t
            return read

        def add_read(stage: _Stage, idx: np.ndarray) -> "torch.Tensor":
            return torch.from_numpy(stage.rows(idx)).to(dev)

        def conv(layer, read, n_in: int, c_out: int, norm, up: int = 1) -> _Stage:
            """``layer`` (ConvLayer / UpsampleConvLayer) over rows read with ``read``."""
            k = layer.conv2d.kernel_size[0]
            s = layer.conv2d.stride[0]
            p = k // 2
            n_up = n_in * up
            h_out = (n_up + 2 * p - k) // s + 1
            out = None
            step = max(1, rows * h_out // H)  # about ``rows`` image rows per strip
            for o0 in range(0, h_out, step):
                o1 = min(h_out, o0 + step)
                j = np.arange(o0 * s, (o1 - 1) * s + k) - p  # padded rows → (upsampled) rows
                src = _reflect(j, n_up) // up
                x = read(src)
                if up > 1:
                    x = x.repeat_interleave(up, dim=-1)
                x = F.pad(x, (p, p, 0, 0), mode="reflect")
                with torch.inference_mode():
                    y = layer.conv2d(x)
                if out is None:
                    out = _Stage((1, c_out, h_out, y.shape[-1]), norm, folder)
                out.write(o0, y)
                done[0] += 1
                pbar.update(1)
                if progress is not None:
                    progress(done[0], max(done[0], total_steps))
            return out

        c1 = cfg.base_channels
        c2, c3 = 2 * c1, 4 * c1
        # strips per stage ≈ H/rows; stages: 3, 2 per residual block, 3
        total_steps = (3 + 2 * len(blocks) + 3) * max(1, -(-H // rows))
        pbar.total = total_steps
        pbar.refresh()
        with torch.inference_mode():
            p1 = conv(net.conv1, image_rows, H, c1, net.in1)
            p2 = conv(net.conv2, reader(p1), H, c2, net.in2)
            del p1
            p3 = conv(net.conv3, reader(p2), H // 2, c3, net.in3)
            del p2
            y = _materialise(p3, reader(p3), folder)  # relu(in3(conv3(...))): the blocks' input
            del p3
            for b in blocks:
                q1 = conv(b.conv1, lambda idx, y=y: add_read(y, idx), H // 4, c3, b.in1)
                q2 = conv(b.conv2, reader(q1), H // 4, c3, b.in2)
                del q1
                y = _materialise(q2, reader(q2, relu=False, add=y), folder)
                del q2
            p4 = conv(net.deconv1, lambda idx, y=y: add_read(y, idx), H // 4, c2, net.in4, up=2)
            del y
            p5 = conv(net.deconv2, reader(p4), H // 2, c1, net.in5, up=2)
            del p4
            out = np.empty((H, W, 3), dtype=np.uint8)
            read5 = reader(p5)
            k = net.deconv3.conv2d.kernel_size[0]
            p = k // 2
            for o0 in range(0, H, rows):
                o1 = min(H, o0 + rows)
                x = read5(_reflect(np.arange(o0 - p, o1 + p), H))
                z = net.deconv3.conv2d(F.pad(x, (p, p, 0, 0), mode="reflect"))  # 1×3×r×W
                if cfg.output == "residual":
                    xt = (image_rows(np.arange(o0, o1)) + _SKIP_PAD) / (255.0 + 2 * _SKIP_PAD)
                    z = (255.0 + 2 * _SKIP_PAD) * torch.sigmoid(torch.logit(xt) + z.float()) \
                        - _SKIP_PAD
                out[o0:o1] = z[0].float().clamp(0, 255).round().to(torch.uint8) \
                    .permute(1, 2, 0).cpu().numpy()
                done[0] += 1
                pbar.update(1)
                if progress is not None:
                    progress(done[0], max(done[0], total_steps))
            if progress is not None and done[0] < total_steps:
                progress(total_steps, total_steps)
    return out[:h0, :w0]


def _materialise(stage: _Stage, read, folder: str | None) -> _Stage:
    """A stage output read through its norm (and ReLU / residual add) written out in full: the
    input of the next residual block, read several times."""
    n = stage.shape[2]
    out = _Stage(stage.shape, None, folder)
    step = max(1, min(n, 64))
    for r0 in range(0, n, step):
        out.write(r0, read(np.arange(r0, min(n, r0 + step))))
    return out


# ---- the arbitrary-style path (encoder → WCT/AdaIN → decoders) ---------------------------------

# Peak RSS growth of one fp32 pass of the relu3_1 → relu2_1 → relu1_1 chain on CPU, per input
# pixel: 1392 / 1399 B (WCT) and 1217 / 1416 B (AdaIN) at 512² / 1024² (`ru_maxrss` in a fresh
# process, shipped decoders). Rounded up.
ARBITRARY_BYTES_PER_PIXEL = 1600.0
# Whole-image buffers the tiled chain keeps besides a tile: uint8/PIL input and output (16 B) and
# float32 images (the level's input and output, the bicubic upscale between scales: 3 × 12 B).
_ARBITRARY_IMAGE_BYTES_PER_PIXEL = 52.0
MIN_ARBITRARY_TILE = 128


def plan_arbitrary_tile(width: int, height: int, *, device: "torch.device | str" = "cpu",
                        max_memory: int | None = None, tile: int | None = None) -> int | None:
    """Tile size (px) for the arbitrary-style chain on a ``width``×``height`` image, or None
    when the whole image fits ``max_memory`` (bytes; default ``default_memory_budget``). An
    explicit ``tile`` is used as given when the image is larger."""
    if tile is not None:
        if tile < MIN_ARBITRARY_TILE:
            raise ValueError(f"tile must be at least {MIN_ARBITRARY_TILE} px, got {tile}")
        return tile if max(width, height) > tile else None
    dev = _device_type(device)
    budget = default_memory_budget(device) if max_memory is None else int(max_memory)
    if dev == "cpu":
        resident = _process_rss() if max_memory is not None else 0
        budget -= resident + int(_ARBITRARY_IMAGE_BYTES_PER_PIXEL * width * height)
    if width * height * ARBITRARY_BYTES_PER_PIXEL <= budget:
        return None
    need = ARBITRARY_BYTES_PER_PIXEL * MIN_ARBITRARY_TILE ** 2
    if budget < need:
        have = f" (given {max_memory / 2**20:.0f} MB)" if max_memory is not None else ""
        raise ValueError(f"not enough memory to stylize a {width}×{height} image{have}: the "
                         f"image buffers and a minimal tile need about "
                         f"{(max(0, (max_memory or 0) - budget) + need) / 2**20:.0f} MB; raise "
                         "the memory limit or downscale (max size)")
    return max(MIN_ARBITRARY_TILE, min(2048, int(math.sqrt(budget / ARBITRARY_BYTES_PER_PIXEL))
                                       // 4 * 4))
