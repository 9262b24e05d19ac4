"""Stylize video files with PyAV: frame batches, fps and audio kept, temporal smoothing of the
normalization statistics, and a flicker metric.

Flicker in feed-forward style transfer comes largely from per-frame instance statistics: content
entering or leaving the frame shifts every IN layer's mean and variance, and the whole frame's
look shifts with it. ``smooth`` normalises with an exponential moving average of the statistics
over the stream (``norms.stream_statistics``), so the look changes only as fast as the average.

Flicker metric: mean |y_t − y_{t−1}| over consecutive output frames divided by the same for the
input frames (at the processed size). 1 means the output changes as much as the input does.

A live stream that arrives one frame per call (a webcam in the web UI) keeps its averages in a
``norms.StreamState`` between calls: ``LiveStylizer`` holds the model and that state.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

import norms
from engine.devices import resolve_device
from engine.io import atomic_path

from .infer import StyleModel, _run, finish_output, gate_override
from .model import style_names, use_style

# container format per output extension (the temp file of atomic_path has no telling suffix)
VIDEO_FORMATS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm",
                 ".avi": "avi"}
_VIDEO_CODECS = {"mp4": "libx264", "mov": "libx264", "matroska": "libx264", "webm": "libvpx-vp9",
                 "avi": "mpeg4"}


@dataclass
class VideoReport:
    """What ``stylize_video`` did; ``flicker`` = output flicker / input flicker."""

    frames: int
    fps: float
    width: int
    height: int
    audio: bool
    seconds: float
    flicker_input: float
    flicker_output: float
    flicker: float
    smooth: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        s = "off" if self.smooth is None else f"momentum {self.smooth:g}"
        return (f"{self.frames} frames {self.width}×{self.height} at {self.fps:.3g} fps"
                f"{' with audio' if self.audio else ''} in {self.seconds:.1f} s; flicker "
                f"{self.flicker:.3f} (output {self.flicker_output:.2f} / input "
                f"{self.flicker_input:.2f} mean |Δ| per frame; smoothing {s})")


class FlickerMeter:
    """Running mean |x_t − x_{t−1}| of a frame sequence (frames as H×W×3 arrays)."""

    def __init__(self) -> None:
        self.prev: np.ndarray | None = None
        self.total = 0.0
        self.count = 0

    def add(self, frame: np.ndarray) -> None:
        f = frame.astype(np.float32)
        if self.prev is not None and self.prev.shape == f.shape:
            self.total += float(np.abs(f - self.prev).mean())
            self.count += 1
        self.prev = f

    @property
    def value(self) -> float:
        return self.total / self.count if self.count else 0.0


def flicker_ratio(inputs: list[np.ndarray], outputs: list[np.ndarray]) -> float:
    """Output flicker over input flicker for two frame lists (see module docstring)."""
    a, b = FlickerMeter(), FlickerMeter()
    for x, y in zip(inputs, outputs):
        a.add(x)
        b.add(y)
    return b.value / a.value if a.value > 0 else float("nan")


def _open_input(path: Path) -> Any:
    import av

    if not path.is_file():
        raise ValueError(f"{path} does not exist" if not path.exists() else f"{path} is not a file")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise ValueError(f"{path} is not a video file PyAV/FFmpeg can read ({exc})") from None
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path} has no video stream")
    return container


@dataclass
class VideoInfo:
    """What a video file's container says about it (``probe_video``); ``frames`` and ``seconds``
    are None when the container does not say (then they are known only after decoding)."""

    frames: int | None
    fps: float
    seconds: float | None
    width: int
    height: int
    audio: bool
    container: str = ""  # FFmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2", "png_pipe"

    @property
    def still_image(self) -> bool:
        """Whether FFmpeg read the file as a still image (PNG, JPEG, … open as one-frame
        "videos")."""
        return self.container == "image2" or self.container.endswith("_pipe")


def _describe_stream(container: Any) -> str:
    """"codec mpeg4, pixel format yuv420p, 64×48" of a container's first video stream."""
    try:
        cc = container.streams.video[0].codec_context
        return f"codec {cc.name}, pixel format {cc.pix_fmt}, {cc.width}×{cc.height}"
    except Exception:  # noqa: BLE001 - only a description for an error line
        return "an unreadable stream"


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, rate, duration and size of a video file without decoding it; ``ValueError``
    for a missing file or one that is not a video PyAV/FFmpeg can read."""
    inp = _open_input(Path(path))
    try:
        v = inp.streams.video[0]
        rate = v.average_rate or v.guessed_rate
        fps = float(rate) if rate else 0.0
        seconds = None
        if v.duration is not None and v.time_base is not None:
            seconds = float(v.duration * v.time_base)
        elif inp.duration is not None:
            seconds = inp.duration / 1_000_000  # AV_TIME_BASE
        frames = int(v.frames) if v.frames else (round(seconds * fps) if seconds and fps
                                                 else None)
        w, h = v.codec_context.width, v.codec_context.height
        if not w or not h:
            raise ValueError(f"{path}: the video stream has no frame size")
        return VideoInfo(frames=frames, fps=fps, seconds=seconds, width=int(w), height=int(h),
                         audio=bool(inp.streams.audio), container=str(inp.format.name))
    finally:
        inp.close()


def video_format(path: Path) -> str:
    """Container format for an output name; ``ValueError`` for unknown extensions."""
    fmt = VIDEO_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise ValueError(f"output {path}: unknown video extension {path.suffix!r}; use one of "
                         f"{', '.join(sorted(VIDEO_FORMATS))}")
    return fmt


@contextlib.contextmanager
def _statistics(net: torch.nn.Module, smooth: float | None,
                state: "norms.StreamState | None" = None) -> Iterator[None]:
    if smooth is None:
        yield
    else:
        with norms.stream_statistics(net, momentum=smooth, state=state):
            yield


def _forward(net: torch.nn.Module, frames: list[np.ndarray], batch: int, dev: torch.device,
             fast: bool, run: Callable[[torch.Tensor], torch.Tensor] | None = None
             ) -> list[np.ndarray]:
    """Frames through the network ``batch`` at a time (``run``: another forward, e.g. the
    compiled one, which is fed full batches only: a short last batch is padded with copies of
    its last frame, so no second shape is compiled; frames are independent without ``smooth``)."""
    out: list[np.ndarray] = []
    for i in range(0, len(frames), batch):
        chunk = frames[i:i + batch]
        k = len(chunk)
        if run is not None and k < batch:
            chunk = chunk + [chunk[-1]] * (batch - k)
        x = torch.from_numpy(np.stack(chunk)).to(dev)
        x = x.permute(0, 3, 1, 2).float()  # N×3×H×W, 0–255
        y = run(x) if run is not None else _run(net, x, fast)
        y = y[:k].float().clamp(0, 255).round().to(torch.uint8)  # k×3×H×W
        out.extend(y.permute(0, 2, 3, 1).cpu().numpy())
    return out


def _frame_runner(model: StyleModel, backend: str, dev: torch.device, fast: bool,
                  smooth: float | None, size: tuple[int, int], frames: int | None,
                  gate: float | None) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The compiled bf16 forward when ``backend`` ("auto", "torch", "compiled") picks it for a
    job of ``frames`` frames of ``size`` (W, H; unknown length: a long job), else None (eager
    torch, bf16 autocast with ``fast``). Stream statistics (``smooth``) keep eager torch: their
    running state lives in Python between frames."""
    from .infer import _run_compiled, resolve_backend

    if backend == "onnxruntime":
        raise ValueError("videos run in torch: use backend auto, torch or compiled")
    if smooth is not None:
        if backend == "compiled":
            raise ValueError("the compiled backend cannot carry --smooth statistics between "
                             "frames; use backend auto or torch")
        return None
    w, h = size
    pixels = float("inf") if not frames else float(frames) * w * h
    chosen = resolve_backend(backend, dev, fast, job_pixels=pixels, model=model, shape=(h, w))
    if chosen != "compiled":
        return None
    return lambda x: _run_compiled(model, x, frozen=gate is None)


def stylize_frames(model: StyleModel, frames: list[np.ndarray], *, smooth: float | None = None,
                   batch: int = 4, device: str | torch.device = "cpu",
                   fast: bool = False, state: "norms.StreamState | None" = None,
                   style: Any = None) -> list[np.ndarray]:
    """Stylize a list of H×W×3 ``uint8`` frames in order (one stream: with ``smooth`` the
    statistics carry over from frame to frame); returns ``uint8`` frames. ``state`` (with
    ``smooth``): a ``norms.StreamState`` the stream continues from and leaves its averages in, so
    consecutive calls form one stream. ``style``: a multi-style model's style or blend (see
    ``stylize.model.style_selection``)."""
    if smooth is not None and not 0.0 <= smooth < 1.0:
        raise ValueError(f"smoothing momentum must be in [0, 1), got {smooth}")
    dev = resolve_device(device)
    with model.lock:
        net = model.net.to(dev).eval()
        with _statistics(net, smooth, state), _style(model, style):
            return _forward(net, frames, max(1, batch), dev, fast)


def _style(model: StyleModel, style: Any) -> contextlib.AbstractContextManager:
    """``use_style`` for a multi-style model's selection (the caller holds ``model.lock``)."""
    if style is None:
        return contextlib.nullcontext()
    return use_style(model.net, style, style_names(model.meta, model.config.num_styles))


class LiveStylizer:
    """Stylize a live stream one frame per call (a webcam), the model plus the stream's state.

    With ``smooth`` (EMA momentum, e.g. 0.9) every frame normalises with the moving average of
    the statistics of the frames before it (``norms.stream_statistics`` with a
    ``norms.StreamState`` kept here), so frames fed one per call give exactly what
    ``stylize_frames(model, frames, smooth=...)`` gives for the whole list (at the processing
    size). ``smooth=None``: per-frame statistics. ``max_size``: longest side the network runs at
    (the result is scaled back to the frame's size). ``reset_after``: a pause longer than this
    many seconds between frames starts a new stream (a restarted camera). Not thread-safe: one
    stream per instance.
    """

    def __init__(self, model: StyleModel, *, smooth: float | None = 0.9,
                 max_size: int | None = 320, device: str | torch.device = "cpu",
                 reset_after: float | None = None) -> None:
        if smooth is not None and not 0.0 <= smooth < 1.0:
            raise ValueError(f"smoothing momentum must be in [0, 1), got {smooth}")
        if max_size is not None and max_size < 16:
            raise ValueError(f"max_size must be at least 16, got {max_size}")
        self.model, self.smooth, self.max_size = model, smooth, max_size
        self.device, self.reset_after = device, reset_after
        self.state = norms.StreamState()
        self._last: float | None = None

    @property
    def frames(self) -> int:
        """Frames in the current stream (since the last reset)."""
        return self.state.frames

    def reset(self) -> None:
        """Start a new stream: the next frame normalises with its own statistics."""
        self.state.reset()
        self._last = None

    def __call__(self, frame: Image.Image | np.ndarray, *, strength: float = 1.0,
                 preserve_color: bool = False, style: Any = None) -> Image.Image:
        """The next frame of the stream, stylized, at the frame's size; ``strength`` blends
        with the input, ``preserve_color`` keeps its chroma (as ``stylize_image`` does)."""
        if not 0.0 <= strength <= 1.0:
            raise ValueError(f"strength must be in [0, 1], got {strength}")
        now = time.monotonic()
        if (self.reset_after is not None and self._last is not None
                and now - self._last > self.reset_after):
            self.reset()
        self._last = now
        src = (frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame))
               ).convert("RGB")
        work = src
        if self.max_size and max(src.size) > self.max_size:
            s = self.max_size / max(src.size)
            work = src.resize((max(1, round(src.size[0] * s)), max(1, round(src.size[1] * s))),
                              Image.LANCZOS)
        y = stylize_frames(self.model, [np.asarray(work)], smooth=self.smooth, batch=1,
                           device=self.device, state=self.state, style=style)[0]
        return finish_output(src, Image.fromarray(y), preserve_color, strength)


def stylize_video(model: StyleModel, src: str | Path, dst: str | Path, *,
                  smooth: float | None = None, batch: int = 4, max_size: int | None = None,
                  gate: float | None = None, device: str | torch.device = "cpu",
                  fast: bool = False, max_memory: int | None = None,
                  progress: Callable[[int, int | None], None] | None = None,
                  bar: bool = True, style: Any = None, backend: str = "auto") -> VideoReport:
    """Stylize every frame of ``src`` into ``dst`` (written atomically), keeping the frame rate
    and remuxing the first audio stream unchanged.

    ``smooth``: EMA momentum of the normalization statistics across frames (e.g. 0.9; None =
    per-frame statistics). ``batch``: frames per forward pass (reduced to fit ``max_memory``).
    ``max_size``: process frames downscaled to this longest side, scaled back up.
    ``progress(done, total)`` per batch (total None when the container does not say).
    ``style``: a multi-style model's style or blend (see ``stylize.model.style_selection``).
    ``backend``: "auto" (compiled bf16 where ``stylize.infer.resolve_backend`` says the video is
    long enough to repay compiling on this CPU, and without ``smooth``; else eager torch),
    "torch" or "compiled" (see ``stylize.infer``).
    """
    from .tiling import activation_bytes_per_pixel, default_memory_budget

    if batch < 1:
        raise ValueError(f"frame batch must be at least 1, got {batch}")
    if smooth is not None and not 0.0 <= smooth < 1.0:
        raise ValueError(f"smoothing momentum must be in [0, 1), got {smooth}")
    if max_size is not None and max_size < 16:
        raise ValueError(f"max_size must be at least 16, got {max_size}")
    if gate is not None and not model.has_gates:
        raise ValueError(f"model {model.name!r} has no BIN gates; --gate needs a BIN model")
    dev = resolve_device(device)

    def prepare(pw: int, ph: int, total: int | None):
        budget = default_memory_budget(dev) if max_memory is None else max_memory
        per_frame = activation_bytes_per_pixel(model.config, dev, fast) * pw * ph
        if per_frame > budget:
            raise ValueError(f"a {pw}×{ph} frame needs about {per_frame / 2**30:.1f} GB, over the "
                             f"memory budget of {budget / 2**30:.1f} GB; use a smaller max size")
        n_batch = max(1, min(batch, int(budget // per_frame)))
        with contextlib.ExitStack() as stack:  # released here only if the set-up fails
            stack.enter_context(model.lock)
            net = model.net.to(dev).eval()
            # the frame count and size tell the planner this is a long job (compiled bf16 where
            # it pays); decided before any override: a probe may compile the frozen graph, which
            # keeps the learned weights
            run = _frame_runner(model, backend, dev, fast, smooth, (pw, ph), total, gate)
            stack.enter_context(gate_override(net, gate))
            stack.enter_context(_style(model, style))
            stack.enter_context(_statistics(net, smooth))  # one stream across all batches
            held = stack.pop_all()  # transcode holds them while the frames run
        return (lambda frames: _forward(net, frames, n_batch, dev, fast, run)), n_batch, held

    return transcode(src, dst, prepare, max_size=max_size, progress=progress, bar=bar,
                     smooth=smooth)


def write_clip(frames: list[np.ndarray], path: str | Path, fps: int | Fraction = 25,
               audio: bool = False) -> Path:
    """Write H×W×3 ``uint8`` frames as a video (format from the extension), optionally with a
    440 Hz AAC tone as long as the clip; for tests and benchmarks."""
    import av

    path = Path(path)
    fmt = video_format(path)
    rate = Fraction(fps)
    h, w = frames[0].shape[:2]
    with atomic_path(path) as tmp, av.open(str(tmp), mode="w", format=fmt) as out:
        v = out.add_stream(_VIDEO_CODECS[fmt], rate=rate)
        v.width, v.height, v.pix_fmt = w - w % 2, h - h % 2, "yuv420p"
        a = out.add_stream("aac", rate=44100) if audio else None
        for i, f in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:v.height, :v.width]),
                                               format="rgb24")
            frame.pts = i
            frame.time_base = Fraction(rate.denominator, rate.numerator)
            for p in v.encode(frame):
                out.mux(p)
        for p in v.encode():
            out.mux(p)
        if a is not None:
            n = int(44100 * len(frames) / rate)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100)).astype(np.float32)
            for i in range(0, n, 1024):
                chunk = tone[None, i:i + 1024]
                af = av.AudioFrame.from_ndarray(chunk, format="fltp", layout="mono")
                af.sample_rate, af.pts = 44100, i
                for p in a.encode(af):
                    out.mux(p)
            for p in a.encode():
                out.mux(p)
    return path


def read_clip(path: str | Path) -> tuple[list[np.ndarray], float, bool]:
    """(frames as H×W×3 ``uint8``, fps, has audio) of a video file."""
    inp = _open_input(Path(path))
    try:
        v = inp.streams.video[0]
        fps = float(v.average_rate or v.guessed_rate or 0)
        frames = [f.to_ndarray(format="rgb24") for f in inp.decode(v)]
        return frames, fps, bool(inp.streams.audio)
    finally:
        inp.close()


# ---- the arbitrary-style path: any painting, fixed style statistics -------------------------

FrameBatchFn = Callable[[list[np.ndarray]], list[np.ndarray]]


def transcode(src: str | Path, dst: str | Path,
              prepare: Callable[[int, int, int | None], tuple[FrameBatchFn, int,
                                                             contextlib.AbstractContextManager]],
              *, max_size: int | None = None,
              progress: Callable[[int, int | None], None] | None = None,
              bar: bool = True, smooth: float | None = None) -> VideoReport:
    """Decode ``src``, map its frames (H×W×3 ``uint8``, downscaled to ``max_size``) through a
    batch function in order, and write ``dst`` atomically at the source size, keeping the frame
    rate and remuxing the first audio stream unchanged. The one container loop of both video
    paths (a model's, any painting's).

    ``prepare(width, height, frames)`` — the processing size and the frame count (None when the
    container does not say) — returns ``(batch_fn, batch, context)``: ``batch_fn`` maps up to
    ``batch`` frames to as many outputs, ``context`` is held while frames run (a model's lock,
    gate override, streaming statistics). ``smooth`` is only recorded in the report."""
    import av
    from tqdm.auto import tqdm

    src, dst = Path(src), Path(dst)
    fmt = video_format(dst)
    if max_size is not None and max_size < 16:
        raise ValueError(f"max_size must be at least 16, got {max_size}")
    if src.resolve() == dst.resolve():
        raise ValueError(f"output {dst} is the input; choose another output")
    t0 = time.perf_counter()
    inp = _open_input(src)
    try:
        vin = inp.streams.video[0]
        ain = inp.streams.audio[0] if inp.streams.audio else None
        rate = vin.average_rate or vin.guessed_rate
        rate = Fraction(rate) if rate and rate > 0 else Fraction(25)  # a stream without a rate
        w, h = vin.codec_context.width, vin.codec_context.height
        if not w or not h:
            raise ValueError(f"{src}: the video stream has no frame size")
        pw, ph = w, h
        if max_size and max(w, h) > max_size:
            s = max_size / max(w, h)
            pw, ph = max(16, round(w * s)), max(16, round(h * s))
        ow, oh = w - w % 2, h - h % 2  # yuv420p needs even sizes
        total = vin.frames or None
        batch_fn, batch, context = prepare(pw, ph, total)
        fin, fout = FlickerMeter(), FlickerMeter()
        n = 0
        with atomic_path(dst) as tmp, contextlib.ExitStack() as stack:
            out = stack.enter_context(av.open(str(tmp), mode="w", format=fmt))
            vout = out.add_stream(_VIDEO_CODECS[fmt], rate=rate)
            vout.width, vout.height, vout.pix_fmt = ow, oh, "yuv420p"
            tb = Fraction(rate.denominator, rate.numerator)  # one tick per frame
            aout = out.add_stream_from_template(ain) if ain is not None and fmt != "webm" \
                else None  # webm takes only opus/vorbis audio; most sources are aac
            pbar = stack.enter_context(tqdm(total=total, desc="frames", unit="frame",
                                            disable=not bar, leave=False))
            stack.enter_context(context)
            pending: list[np.ndarray] = []

            def flush() -> None:
                nonlocal n
                for x, y in zip(pending, batch_fn(pending)):
                    fin.add(x)
                    fout.add(y)
                    if (pw, ph) != (w, h):
                        y = np.asarray(Image.fromarray(y).resize((w, h), Image.BICUBIC))
                    vf = av.VideoFrame.from_ndarray(np.ascontiguousarray(y[:oh, :ow]),
                                                    format="rgb24")
                    vf.pts, vf.time_base = n, tb
                    for packet in vout.encode(vf):
                        out.mux(packet)
                    n += 1
                pbar.update(len(pending))
                if progress is not None:
                    progress(n, total)
                pending.clear()

            streams = [vin] + ([ain] if aout is not None else [])
            for packet in inp.demux(*streams):
                if packet.stream is ain:
                    if packet.dts is not None:
                        packet.stream = aout
                        out.mux(packet)
                    continue
                for frame in packet.decode():
                    if (frame.width, frame.height) != (w, h):
                        raise ValueError(
                            f"{src}: frame {n + len(pending) + 1} is {frame.width}×"
                            f"{frame.height} but the video started at {w}×{h}; a video "
                            "whose frame size changes mid-stream is not supported (split it "
                            "where the size changes)")
                    rgb = frame.to_ndarray(format="rgb24")
                    if (pw, ph) != (w, h):
                        rgb = np.asarray(Image.fromarray(rgb).resize((pw, ph), Image.LANCZOS))
                    pending.append(rgb)
                    if len(pending) >= batch:
                        flush()
            if pending:
                flush()
            for packet in vout.encode():
                out.mux(packet)
            if n == 0:
                raise ValueError(f"{src} has no decodable video frames")
    except av.error.FFmpegError as exc:
        raise ValueError(f"video error on {src}: {exc}") from None
    except (IndexError, KeyError, TypeError, AttributeError, ZeroDivisionError,
            OverflowError) as exc:  # PyAV/numpy on a stream they do not expect
        raise ValueError(f"{src}: its video stream is not one normlab can stylize "
                         f"({_describe_stream(inp)}; {type(exc).__name__}: "
                         f"{str(exc)[:80]})") from None
    finally:
        inp.close()
    fi, fo = fin.value, fout.value
    return VideoReport(frames=n, fps=float(rate), width=ow, height=oh, audio=aout is not None,
                       seconds=time.perf_counter() - t0, flicker_input=fi, flicker_output=fo,
                       flicker=fo / fi if fi > 0 else float("nan"), smooth=smooth)


def stylize_video_paintings(stylizer: Any, src: str | Path, dst: str | Path,
                            paintings: dict[str, float], *, method: str = "wct",
                            alpha: float = 1.0, scales: tuple[int, ...] = (1,),
                            style_size: int | None = None, max_size: int | None = 512,
                            smooth: float | None = 0.9, preserve_color: bool = False,
                            strength: float = 1.0, max_memory: int | None = None,
                            progress: Callable[[int, int | None], None] | None = None,
                            bar: bool = True) -> VideoReport:
    """Stylize every frame of ``src`` into ``dst`` with any painting(s) (``stylize.arbitrary``):
    the style statistics are computed once, at the processed frame size, for the whole video.
    ``smooth``: EMA momentum of the frames' content statistics (``ContentSmoother``; None = each
    frame its own), which keeps the whitening from jumping with every object that enters."""
    from .arbitrary import ContentSmoother, load_paintings
    from .tiling import plan_arbitrary_tile

    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    info = probe_video(src)
    fw, fh = info.width, info.height
    if max_size and max(fw, fh) > max_size:
        s = max_size / max(fw, fh)
        fw, fh = max(16, round(fw * s)), max(16, round(fh * s))
    dev = next(stylizer.parameters()).device
    tile = plan_arbitrary_tile(fw, fh, device=dev, max_memory=max_memory)
    styles, weights = load_paintings(paintings, style_size or max(fw, fh))
    stats = stylizer.style_statistics([t.to(dev) for t in styles], weights, method)
    smoother = ContentSmoother(smooth) if smooth is not None else None

    def frame_fn(rgb: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(rgb)).to(dev).permute(2, 0, 1)[None].float()
        y = stylizer(x, stats, alpha=alpha, scales=scales, tile=tile, smoother=smoother)
        out = y[0].clamp(0, 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()
        if preserve_color or strength < 1.0:
            out = np.asarray(finish_output(Image.fromarray(rgb), Image.fromarray(out),
                                           preserve_color, strength).convert("RGB"))
        return out

    def prepare(pw: int, ph: int, total: int | None):
        return (lambda frames: [frame_fn(f) for f in frames]), 1, contextlib.nullcontext()

    return transcode(src, dst, prepare, max_size=max_size, progress=progress, bar=bar,
                     smooth=smooth)
