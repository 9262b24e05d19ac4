"""Loading style models (shipped name, .safetensors, pytorch/examples .pth) and stylizing images:
size limits, any size in bounded memory (thumbnail-statistics tiles, ``stylize.tiling``), colour
preservation, strength and BIN gate overrides."""
from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

import torch
from PIL import Image, ImageDraw, ImageFont

import norms
import weights
import engine.io
from engine.devices import cpu_native_bf16, resolve_device

from engine.images import _to_rgb_or_rgba, to_image, to_tensor
from .model import (StyleConfig, TransformerNet, load_examples_pth, load_style_net, style_names,
                    use_style)
from .oneshot import (BACKENDS, LONG_JOB_IMAGES, PROBE_MIN_PIXELS,  # noqa: F401 (torch-free)
                      finish_output)


@dataclass
class StyleModel:
    """A loaded style network with its config, display name and checkpoint metadata."""

    net: TransformerNet
    config: StyleConfig
    name: str
    meta: dict[str, Any] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    # sha256 of the file it was loaded from (the ONNX cache key; None: built in memory)
    weights_sha: str | None = None
    # torch.compile'd networks of the compiled bf16 path ("frozen"/"live", see
    # ``_compiled_net``), built on the first long job and kept, with the input sizes (H, W)
    # compiled so far (static shapes: see ``_run_compiled``)
    compiled: Any = field(default=None, repr=False)
    compiled_shapes: set = field(default_factory=set, repr=False)

    @property
    def has_gates(self) -> bool:
        """True for BIN-like models whose ρ can be overridden with ``gate``."""
        return any(True for _ in norms.iter_gates(self.net))


    @property
    def nbytes(self) -> int:
        """Bytes of the network's parameters and buffers (what the model cache counts)."""
        return sum(t.numel() * t.element_size() for t in
                   list(self.net.parameters()) + list(self.net.buffers()))


# Loaded models, least recently used first, bounded by bytes (the UI loads user uploads here:
# an unbounded cache kept every distinct upload). ``NORMLAB_MODEL_CACHE_MB`` overrides it.
_CACHE: "OrderedDict[tuple[str, float, int, str], StyleModel]" = OrderedDict()
MODEL_CACHE_BYTES = 512 << 20


def _cache_limit() -> int:
    v = os.environ.get("NORMLAB_MODEL_CACHE_MB", "").strip()
    try:
        return max(0, int(float(v) * 2**20)) if v else MODEL_CACHE_BYTES
    except ValueError:
        return MODEL_CACHE_BYTES


def _cache_put(key: tuple, model: StyleModel) -> None:
    _CACHE[key] = model
    _CACHE.move_to_end(key)
    limit = _cache_limit()
    while len(_CACHE) > 1 and sum(m.nbytes for m in _CACHE.values()) > limit:
        _CACHE.popitem(last=False)


def list_models() -> list[str]:
    """Names of the shipped style models (weights/manifest.json, kind "stylize")."""
    return weights.names("stylize")


def _resolve(spec: str | Path) -> tuple[Path, str]:
    s = str(spec)
    with contextlib.suppress(ValueError):  # the one lookup; the errors below say more
        p = weights.resolve(s, "stylize")
        if s in list_models():
            return p, s
        return p, (p.parent.name if p.stem == "model" and p.parent.name else p.stem)
    p = Path(s)
    shipped = ", ".join(list_models()) or "none"
    if s in weights.names("classify"):
        e = weights.manifest()[s]
        raise ValueError(f"{s} is a shipped classifier ({e.get('arch')}, {e.get('norm')}), not a "
                         f"style model (shipped style models: {shipped})")
    if p.exists():  # a folder, FIFO or device
        raise ValueError(f"{s} is a {engine.io.file_type(p)}, not a model file")
    if p.suffix.lower() in (".safetensors", ".pth", ".pt", ".model") or "/" in s or "\\" in s:
        raise ValueError(f"model file {s} not found (shipped models: {shipped})")
    raise ValueError(f"no style model {engine.io.clip(repr(s))}: give a shipped name ({shipped}), a .safetensors "
                     "file or a pytorch/examples .pth file")


def load_model(spec: str | Path, device: str | torch.device = "cpu") -> StyleModel:
    """A shipped model name, a ``.safetensors`` file written by ``stylize train`` or a
    pytorch/examples ``.pth``; cached per (file, mtime, size, device) in an LRU bounded by bytes
    (``MODEL_CACHE_BYTES``). The header's size and the metadata's JSON depth are bounded before
    it is parsed (``stylize.deploy.read_header_metadata``)."""
    from .deploy import file_sha256, read_header_metadata

    path, name = _resolve(spec)
    dev = resolve_device(device)
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime, st.st_size, str(dev))
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key]
    if path.suffix.lower() == ".safetensors":
        read_header_metadata(path)  # bounded: a crafted header is refused before json parses it
        net, meta = load_style_net(path)  # kind and config bounds checked before any tensor
        config = net.config
    elif path.suffix.lower() in (".pth", ".pt", ".model"):
        net, meta = load_examples_pth(path), {"source": "pytorch/examples", "style": path.stem}
        config = net.config
    else:
        raise ValueError(f"{path}: unknown model format {path.suffix!r} (use .safetensors or .pth)")
    model = StyleModel(net=net.to(dev).eval(), config=config, name=name, meta=meta,
                       weights_sha=file_sha256(path))
    _cache_put(key, model)
    return model


@contextlib.contextmanager
def gate_override(net: torch.nn.Module, gate: float | None) -> Iterator[None]:
    """Temporarily push every ρ toward IN (gate → −1) or BN (gate → +1); restored on exit.

    ρ' = ρ + g·(1 − ρ) for g ≥ 0 and ρ·(1 + g) for g < 0, so g = 0 keeps the learned gates,
    g = ±1 makes every layer pure BN / pure IN (BIN paper eq. 3 at its two ends).
    """
    if gate is None:
        yield
        return
    g = float(gate)
    if not -1.0 <= g <= 1.0:
        raise ValueError(f"gate must be in [-1, 1] (−1 = IN, +1 = BN), got {g}")
    gates = [p for _, p in norms.iter_gates(net)]
    saved = [p.detach().clone() for p in gates]
    try:
        with torch.no_grad():
            for p in gates:
                p.copy_(p + g * (1 - p) if g >= 0 else p * (1 + g)).clamp_(0, 1)
        yield
    finally:
        with torch.no_grad():
            for p, s in zip(gates, saved):
                p.copy_(s)


# What "auto" may pick, by device and job (each within PSNR ≥ 40 dB of fp32 eager, tested):
# - CUDA: eager with fp16/bf16 autocast (``engine.devices.amp_dtype``) and channels_last;
# - CPU, a job large enough to repay compiling (``job_pixels``: a folder, a video; ``math.inf``
#   for the UI or a webcam loop) on a CPU with native bf16 (AVX-512 BF16 / AMX) where the
#   cached probe (``probe_compiled``) measured it faster: torch.compile + bf16 autocast
#   ("compiled", compiled once per model and image size and kept);
# - CPU otherwise: onnxruntime fp32 (exported once, cached, see ``stylize.deploy``), or torch
#   where onnxruntime is missing or its cache cannot be written.
AUTO_CPU_BACKEND = "onnxruntime"
# Above this many pixels "auto" stays in torch when a bar is wanted: onnxruntime runs the whole
# graph in one call, so only torch can report progress per network stage.
AUTO_ONNX_MAX_PIXELS = 2_000_000
PSNR_MIN = 40.0  # dB against fp32 eager: the least a path "auto" picks must keep


def resolve_backend(backend: str, device: torch.device, fast: bool = False,
                    job_pixels: float = 0.0, model: StyleModel | None = None,
                    shape: tuple[int, int] | None = None) -> str:
    """"torch", "onnxruntime" or "compiled" (torch.compile + bf16 autocast) for a requested
    backend; ``ValueError`` for unknown names or onnxruntime on a GPU / with ``fast``.
    ``fast`` asks for the compiled bf16 path; on a device where it is not native it falls back
    to what "auto" picks. "auto" decides from the device, the job's size (``job_pixels``: the
    pixels still to stylize; ``math.inf`` for a long-lived process) and, for compiled, the
    cached probe of this machine and model (``probe_compiled``): compiled when it is within
    PSNR ≥ 40 dB and faster, and the time it saves on the job repays compiling (nothing to
    repay once this process has compiled the model for this ``shape``, H×W; at most
    ``MAX_COMPILED_SHAPES`` shapes are compiled per model)."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if backend == "onnxruntime" and (device.type != "cpu" or fast):
        raise ValueError("the onnxruntime backend runs fp32 on CPU: use device cpu without fast")
    if backend == "compiled" or (fast and backend in ("auto", "compiled")):
        if device.type == "cpu" and not cpu_native_bf16():
            if backend == "compiled":
                raise ValueError("the compiled backend runs bf16: this CPU has no native bf16 "
                                 "(AVX-512 BF16 or AMX); use auto")
            backend = "auto"  # --fast where bf16 is emulated: the fastest correct path instead
        else:
            return "compiled" if device.type == "cpu" else "torch"
    if backend != "auto":
        return backend
    if device.type != "cpu":
        return "torch"  # with fp16/bf16 autocast on CUDA (see ``_run``)
    if model is not None and job_pixels > 0 and cpu_native_bf16():
        if shape is not None and tuple(shape) in model.compiled_shapes:
            return "compiled"  # compiled here for this size: nothing left to repay
        if (job_pixels >= PROBE_MIN_PIXELS or probe_known(model, device)) and \
                len(model.compiled_shapes) < MAX_COMPILED_SHAPES:
            probe = probe_compiled(model, device)
            per_px = probe["side"] ** 2
            saved = job_pixels * (probe["best_other_s"] - probe["compiled_s"]) / per_px
            if probe.get("use_compiled") and saved > probe["compile_s"]:
                return "compiled"
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return "torch"
    return AUTO_CPU_BACKEND


def prepare_long_job(model: StyleModel, size: tuple[int, int], *,
                     device: str | torch.device = "auto", backend: str = "auto",
                     fast: bool = False, max_size: int | None = None,
                     frames: int | None = None, warm: bool = True) -> str:
    """Plan a long job on ``model`` — a UI session, a webcam loop, a folder or a video — of
    images of ``size`` (width, height, before ``max_size``), ``frames`` of them (None: no end
    known, e.g. the UI) and return the backend it will run on ("compiled", "onnxruntime" or
    "torch", see ``resolve_backend``). On a native-bf16 CPU this probes the machine once (cached)
    and, with ``warm`` and "compiled", compiles the network for that size now, so the first
    image the user waits for is not the one that compiles. Then call ``stylize_image`` with
    ``job_pixels=math.inf`` (or the pixels left) and the same ``backend``, ``max_size``."""
    import math

    dev = resolve_device(device)
    w, h = processing_size(size, max_size)
    pixels = math.inf if frames is None else float(frames) * w * h
    with model.lock:
        chosen = resolve_backend(backend, dev, fast, job_pixels=pixels, model=model,
                                 shape=(h, w))
    if warm and chosen == "compiled":
        stylize_image(model, Image.new("RGB", (w, h), (128, 128, 128)), device=dev,
                      backend=backend, fast=fast, job_pixels=pixels, bar=False)
    return chosen


# Set to 0 to keep ``warm_in_background`` from compiling (the test suite does: a compile thread
# would run on into the next tests).
BACKGROUND_COMPILE_ENV = "NORMLAB_BACKGROUND_COMPILE"
_WARMING: set = set()  # (id(model), (H, W)) being compiled in the background
_WARMING_LOCK = threading.Lock()


def warm_in_background(model: StyleModel, size: tuple[int, int], *,
                       device: str | torch.device = "cpu",
                       max_size: int | None = None) -> threading.Thread | None:
    """For a stream of images of one ``size`` (width, height, before ``max_size``) — the UI's
    webcam — compile the bf16 path for that size without making any image wait for it: a
    daemon thread probes the machine (once, cached), compiles a copy of the network and, when
    done, swaps the copy and its compiled graph into ``model`` under its lock; until then
    ``stylize_image`` runs on what it picks for a single image (onnxruntime or eager), and
    after it picks "compiled" for that size by itself (``resolve_backend``: a compiled shape
    has nothing left to repay). Only the weights as loaded are copied, so gate and style
    overrides (applied per call inside the lock) keep working on the swapped-in network.
    Returns the thread, or None when there is nothing to do: not a CPU with native bf16, the
    size compiled already or being compiled, ``MAX_COMPILED_SHAPES`` reached, or
    ``NORMLAB_BACKGROUND_COMPILE=0``."""
    import copy

    if os.environ.get(BACKGROUND_COMPILE_ENV, "1") == "0":
        return None
    dev = resolve_device(device)
    if dev.type != "cpu" or not cpu_native_bf16():
        return None
    w, h = processing_size(size, max_size)
    shape = (h, w)
    key = (id(model), shape)
    with model.lock:
        if shape in model.compiled_shapes or len(model.compiled_shapes) >= MAX_COMPILED_SHAPES:
            return None
        with _WARMING_LOCK:
            if key in _WARMING:
                return None
            _WARMING.add(key)
        # outside any override: the lock's holder restores gates and styles before releasing
        shadow = StyleModel(net=copy.deepcopy(model.net), config=model.config, name=model.name,
                            meta=model.meta, weights_sha=model.weights_sha)

    def work() -> None:
        try:
            chosen = prepare_long_job(shadow, (w, h), device=dev, frames=None, warm=True)
            if chosen != "compiled":
                return
            with model.lock:  # the next image sees the compiled network, never half of it
                model.net = shadow.net
                model.compiled = shadow.compiled
                model.compiled_shapes = set(shadow.compiled_shapes)
        except Exception as exc:  # noqa: BLE001 - a failed warm-up leaves the model as it was
            import sys

            print(f"note: background compile for {w}×{h} failed ({exc}); staying on "
                  f"{AUTO_CPU_BACKEND}", file=sys.stderr)
        finally:
            with _WARMING_LOCK:
                _WARMING.discard(key)

    thread = threading.Thread(target=work, name=f"normlab-compile-{w}x{h}", daemon=True)
    thread.start()
    return thread


def _machine_key() -> str:
    """What the probe's result depends on: CPU model and flags, torch's CPU capability, threads."""
    import hashlib

    from engine.devices import cpu_flags, cpu_model_name

    cap = torch.backends.cpu.get_cpu_capability()
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma", "sse4")))
    text = json.dumps([cpu_model_name(), cap, flags, torch.get_num_threads(), torch.__version__])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def probe_path() -> Path:
    """The probe cache (``NORMLAB_CACHE`` or ``$XDG_CACHE_HOME/normlab``, ``probe.json``)."""
    from .deploy import cache_dir

    return cache_dir().parent / "probe.json"


_PROBES: dict[str, dict[str, Any]] = {}
PROBE_SIDE = 256
# Shapes compiled per model: static shapes (inductor's dynamic-shape build of this network
# fails on torch 2.14: "TensorReferenceAnalysis has no attribute python_mod"), so each new
# image size is a new compilation; beyond this many, new sizes run in onnxruntime.
MAX_COMPILED_SHAPES = 4


# Bumped when the compiled path changes, so probes cached by an older one are measured again.
# 2: no graph breaks in the norms, frozen (prepacked) weights.
PROBE_FORMAT = 2


def _probe_key(model: StyleModel) -> str:
    from .deploy import weights_sha

    return f"{_machine_key()}:{PROBE_FORMAT}:{weights_sha(model)[-24:]}"


def _probe_table() -> dict[str, Any]:
    from .deploy import checked_json

    path = probe_path()
    try:
        table = checked_json(path.read_text(), str(path), max_bytes=1 << 20)
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def probe_known(model: StyleModel, device: torch.device) -> bool:
    """Whether this machine has already probed ``model`` (in this process or the cache)."""
    key = _probe_key(model)
    if key in _PROBES:
        return True
    found = _probe_table().get(key)
    if isinstance(found, dict) and {"side", "best_other_s", "compiled_s", "compile_s",
                                    "use_compiled"} <= set(found):
        _PROBES[key] = found
        return True
    return False


def probe_compiled(model: StyleModel, device: torch.device) -> dict[str, Any]:
    """Whether torch.compile + bf16 autocast beats onnxruntime fp32 on this machine for this
    model, within PSNR ≥ 40 dB of fp32 eager: measured once (compile, then one timed pass of
    each on a PROBE_SIDE² input) and cached per machine and model in ``probe_path()``; the
    compiled network is kept in ``model.compiled``. A cache that cannot be written is not an
    error (the result is kept for this process)."""
    key = _probe_key(model)
    if probe_known(model, device):
        return _PROBES[key]
    path = probe_path()
    table = _probe_table()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, PROBE_SIDE, PROBE_SIDE, generator=g) * 255
    net = model.net
    with torch.inference_mode():
        ref = net(x.to(device)).float().cpu()
        t = time.perf_counter()
        net(x.to(device))
        eager_s = time.perf_counter() - t
    t = time.perf_counter()
    out = _run_compiled(model, x.to(device)).float().cpu()
    compile_s = time.perf_counter() - t
    t = time.perf_counter()
    _run_compiled(model, x.to(device))
    compiled_s = time.perf_counter() - t
    from .bench import psnr

    q = psnr(out, ref)
    onnx_s = None
    try:
        from .deploy import CacheUnavailable, gate_feeds, onnx_runner

        r = onnx_runner(model)
        r(x, gate_feeds(model, r))
        t = time.perf_counter()
        r(x, gate_feeds(model, r))
        onnx_s = time.perf_counter() - t
    except (ImportError, CacheUnavailable, ValueError):
        pass
    best_other = min(eager_s, onnx_s) if onnx_s is not None else eager_s
    result = {"psnr_db": round(q, 2), "compile_s": round(compile_s, 2),
              "compiled_s": compiled_s, "onnx_s": onnx_s, "eager_s": eager_s,
              "best_other_s": best_other,
              "side": PROBE_SIDE, "capability": torch.backends.cpu.get_cpu_capability(),
              "use_compiled": bool(q >= PSNR_MIN and compiled_s < 0.9 * best_other)}
    _PROBES[key] = result
    table[key] = result
    try:
        from engine.io import write_text_atomic

        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(table, indent=1))
    except OSError:
        pass
    return result


def _compiled_net(model: StyleModel, frozen: bool) -> Any:
    """The torch.compile'd network of ``model``, built once per kind and kept (static shapes:
    one compilation per input size, see ``MAX_COMPILED_SHAPES``). ``frozen``: inductor's
    freezing, i.e. the weights become constants of the graph, prepacked once for oneDNN's bf16
    convolutions (no per-call weight casts or reorders); only for weights that no longer change
    (no gate override, a single style), since an in-place change would not reach the graph."""
    if not isinstance(model.compiled, dict):
        model.compiled = {}
    key = "frozen" if frozen else "live"
    if key not in model.compiled:
        import torch._dynamo

        cfg = torch._dynamo.config
        # the limit counts every model and size compiled in this process: keep room for several
        cfg.recompile_limit = max(cfg.recompile_limit, 8 * MAX_COMPILED_SHAPES)
        # ``options`` makes the two kinds distinct backends to dynamo (identical torch.compile
        # wrappers share compiled code, and a frozen graph would then answer a gate override)
        model.compiled[key] = torch.compile(model.net, dynamic=False,
                                            options={"freezing": frozen})
    return model.compiled[key]


def _run_compiled(model: StyleModel, x: torch.Tensor, frozen: bool = True) -> torch.Tensor:
    """torch.compile + bf16 autocast + channels_last under inference mode (N×3×H×W, 0–255 →
    float32), compiled once per model and input size and kept (a folder of same-size photos or
    a video compiles once). ``frozen=False`` where the weights are changed in place between
    calls (gate overrides, style selection of a multi-style model): see ``_compiled_net``."""
    import torch._inductor.config as inductor_config

    frozen = frozen and model.config.num_styles == 1
    net = _compiled_net(model, frozen)
    model.compiled_shapes.add(tuple(x.shape[-2:]))
    # inductor reads ``freezing`` when it compiles, i.e. on the first call at each size
    # (torch.compile's ``options`` do not reach it on torch 2.14)
    with torch.inference_mode(), torch.autocast(x.device.type, dtype=torch.bfloat16), \
            inductor_config.patch(freezing=frozen):
        return net(x.contiguous(memory_format=torch.channels_last)).float()


def _run(net: TransformerNet, x: torch.Tensor, fast: bool) -> torch.Tensor:
    """One forward pass (1×3×H×W, 0–255) under inference mode; ``fast``: channels_last + bf16
    autocast (fp16 on CUDA GPUs without bf16: ``engine.devices.amp_dtype``)."""
    from engine.devices import amp_dtype

    with torch.inference_mode():
        if fast:
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(x.device.type, dtype=amp_dtype(x.device)):
                return net(x).float()
        return net(x)


@contextlib.contextmanager
def _stage_progress(net: TransformerNet, bar: bool,
                    progress: Callable[[int, int], None] | None) -> Iterator[None]:
    """Progress of one untiled pass, one step per stage of the network (conv1 … deconv3): a tqdm
    bar that appears once the pass has taken 2 s, and/or ``progress(done, total)`` calls."""
    from tqdm.auto import tqdm

    stages = [m for n, m in net.named_children() if n != "relu"]
    if not bar and progress is None:
        yield
        return
    with tqdm(total=len(stages), desc="stylize", unit="stage", delay=2.0, leave=False,
              disable=not bar) as pbar:
        done = [0]

        def hook(*_: Any) -> None:
            done[0] += 1
            pbar.update(1)
            if progress is not None:
                progress(done[0], len(stages))

        handles = [m.register_forward_hook(hook) for m in stages]
        try:
            yield
        finally:
            for h in handles:
                h.remove()


def _is_alloc_failure(exc: BaseException) -> bool:
    """An out-of-memory error of torch's allocators (CPU or CUDA) or of Python itself."""
    if isinstance(exc, MemoryError) or type(exc).__name__ == "OutOfMemoryError":
        return True
    text = str(exc).lower()
    # torch's CPU/CUDA allocators, onnxruntime's arena ("Failed to allocate memory", "bad
    # allocation"; its own exception types)
    return any(w in text for w in ("can't allocate memory", "defaultcpuallocator",
                                   "out of memory", "failed to allocate memory",
                                   "bad allocation", "bad_alloc"))


def processing_size(size: tuple[int, int], max_size: int | None) -> tuple[int, int]:
    """The (width, height) the network runs at for an image of ``size``: scaled down so its
    longest side is ``max_size`` (None/0: the image's own size)."""
    w, h = size
    if max_size and max(w, h) > max_size:
        s = max_size / max(w, h)
        return max(1, round(w * s)), max(1, round(h * s))
    return w, h


def stylize_image(model: StyleModel, image: Image.Image, *, max_size: int | None = None,
                  tile: int | None = None, preserve_color: bool = False, strength: float = 1.0,
                  gate: float | None = None, device: str | torch.device = "cpu",
                  fast: bool = False, max_memory: int | str | None = None,
                  progress: Callable[[int, int], None] | None = None,
                  bar: bool = True, backend: str = "auto",
                  style: str | int | None = None, job_pixels: float = 0.0) -> Image.Image:
    """Stylize ``image``; the result has the input's size (and its alpha channel, if any).

    ``max_size`` processes a downscaled copy (longest side) and scales the result back.
    Images whose activations exceed ``max_memory`` (bytes or "2G"; default: half of what the
    process may allocate — available RAM, cgroup limit, ``ulimit -v`` — or 80 % of free GPU
    memory) are streamed stage by stage in strips of rows with whole-image statistics (see
    ``stylize.tiling.stylize_streamed``), so they equal the whole-image pass; ``tile`` forces
    strips holding as many pixels as a tile of that size. When an allocation fails anyway, the
    image is retried in smaller strips (down to a 128 px tile's worth) before a one-line
    ``ValueError``. ``preserve_color`` keeps the input's chroma
    (YCbCr) and takes only luminance from the stylized image; ``strength`` blends with the
    input; ``gate`` overrides BIN gates (see ``gate_override``; on onnxruntime a graph input,
    no new export). ``progress(done, total)`` is called per tile (or per network stage when
    untiled); ``bar`` shows a tqdm bar for work that takes over 2 s. ``backend``: "torch",
    "onnxruntime" (CPU; exported once and cached, see ``stylize.deploy``; torch when the cache
    cannot be written), "compiled" (torch.compile + bf16 autocast, native-bf16 CPUs) or "auto"
    (see ``resolve_backend``; ``job_pixels``: the pixels the caller still has to stylize with
    this call's, so a folder or video can repay compiling; ``math.inf`` for a long-lived
    process such as the UI or a webcam loop); tiles always run in eager
    torch (their frozen statistics are a PyTorch-side mechanism). ``style`` picks a multi-style
    model's style by name or index, or blends them ("candy:0.5,mosaic:0.5"; see
    ``stylize.model.style_selection``).
    """
    from .tiling import MIN_TILE, parse_memory, plan_memory, stylize_tiled

    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    if max_size is not None and max_size < 16:
        raise ValueError(f"max_size must be at least 16, got {max_size}")
    if gate is not None and not model.has_gates:
        raise ValueError(f"model {model.name!r} has no BIN gates (norm {model.config.norm!r}); "
                         "--gate needs a BIN model")
    dev = resolve_device(device)  # "auto" becomes a real device before anything uses it
    resolve_backend(backend, dev, fast)  # bad names fail before any work
    budget = None if max_memory is None else parse_memory(max_memory)
    image = _to_rgb_or_rgba(image)
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    src = image.convert("RGB")
    size = src.size
    work = src if processing_size(size, max_size) == size else src.resize(
        processing_size(size, max_size), Image.LANCZOS)
    plan = plan_memory(work.size[0], work.size[1], model.config, device=dev, max_memory=budget,
                       tile=tile, fast=fast)
    job_pixels = max(job_pixels, work.size[0] * work.size[1])
    with model.lock:
        net = model.net
        if next(net.parameters()).device != dev:
            net.to(dev)
        net.eval()
        names = style_names(model.meta, model.config.num_styles)
        # the backend (and an export, a probe) before any override: the cache holds the
        # learned weights, gates are fed per call
        chosen = resolve_backend(backend, dev, fast, job_pixels=job_pixels, model=model,
                                 shape=(work.size[1], work.size[0]))
        runner = None
        pixels = work.size[0] * work.size[1]
        if chosen == "onnxruntime" and plan.tile is None and model.config.num_styles == 1 \
                and not (backend == "auto" and bar and pixels > AUTO_ONNX_MAX_PIXELS):
            from .deploy import CacheUnavailable, onnx_runner

            try:
                runner = onnx_runner(model)
            except CacheUnavailable as exc:
                if backend == "onnxruntime":
                    import sys

                    print(f"note: {exc}; running in torch", file=sys.stderr)
        if chosen == "onnxruntime":
            chosen = "torch"  # tiles, multi-style models, a bar, no cache: torch
        with gate_override(net, gate), use_style(net, style, names):
            while True:
                try:
                    half = fast or (dev.type == "cuda" and backend == "auto")
                    out = _stylize_planned(model, work, plan, dev, half, chosen, runner,
                                           progress, bar, frozen=gate is None)
                    break
                except Exception as exc:  # noqa: BLE001 - only allocation failures are retried
                    if not _is_alloc_failure(exc):
                        raise
                    side = plan.tile or max(work.size)
                    smaller = max(2 * MIN_TILE, side // 2 // 4 * 4)
                    if side <= 2 * MIN_TILE:
                        raise ValueError(
                            f"not enough memory to stylize a {work.size[0]}×{work.size[1]} image "
                            f"even in {side} px tiles; lower --max-memory, free memory or use "
                            "--max-size") from None
                    import gc

                    gc.collect()
                    if dev.type == "cuda":
                        torch.cuda.empty_cache()
                    from .tiling import MemoryPlan

                    thumb = min(plan.thumbnail_side, max(work.size))
                    plan = MemoryPlan(smaller, thumb, plan.activation_budget // 4)
    out = finish_output(src, out, preserve_color, strength)
    if alpha is not None:
        out.putalpha(alpha)
    return out


def _stylize_planned(model: StyleModel, work: Image.Image, plan: Any, dev: torch.device,
                     fast: bool, chosen: str, runner: Any,
                     progress: Callable[[int, int], None] | None, bar: bool,
                     frozen: bool = True) -> Image.Image:
    """One attempt of ``stylize_image`` at a memory plan with a chosen backend ("torch" or
    "compiled"; ``runner``: an onnxruntime runner to use instead). The caller holds the model's
    lock and has applied the gate and style; ``frozen``: whether the compiled graph may hold
    the weights as constants (no gate override)."""
    from .tiling import (stylize_streamed, stylize_tiled, streamable,
                         streamed_storage_bytes_per_pixel)

    net = model.net
    if plan.tile is not None and streamable(net):
        # exact: whole-image statistics at every norm, stage by stage in strips of rows that
        # hold as many pixels as a tile would (at least 32 rows: the 9×9 convs' halo is 8)
        w, h = work.size
        rows = max(32, min(h, plan.tile * plan.tile // max(w, 1)))
        on_disk = streamed_storage_bytes_per_pixel(model.config) * w * h > \
            plan.activation_budget // 2
        try:
            return Image.fromarray(stylize_streamed(net, np.asarray(work), rows=rows,
                                                    device=dev, on_disk=on_disk,
                                                    progress=progress, bar=bar))
        except OSError as exc:  # the temporary stage files (only with on_disk)
            import tempfile

            need = streamed_storage_bytes_per_pixel(model.config) * w * h / 2**20
            why = os.strerror(exc.errno).lower() if exc.errno else str(exc)
            raise ValueError(f"cannot write the temporary files of a streamed image in "
                             f"{tempfile.gettempdir()} ({why}; needs about {need:.0f} MB): set "
                             "TMPDIR to a folder with space, or raise --max-memory") from None
    if plan.tile is not None:
        rgb = np.asarray(work)
        return Image.fromarray(stylize_tiled(
            net, rgb, lambda x: _run(net, x, fast), tile=plan.tile,
            thumbnail_side=plan.thumbnail_side, device=dev, progress=progress, bar=bar))
    if runner is not None:
        from .deploy import gate_feeds

        out = to_image(runner(to_tensor(work), gate_feeds(model, runner)))
        if progress is not None:  # one opaque call: report it as one finished stage
            progress(1, 1)
        return out
    if chosen == "compiled":
        out = to_image(_run_compiled(model, to_tensor(work).to(dev), frozen=frozen).cpu())
        if progress is not None:
            progress(1, 1)
        return out
    with _stage_progress(net, bar, progress):
        # ``fast``: fp16/bf16 autocast (on CUDA also what "auto" picks; PSNR ≥ 40 dB, gpu test)
        return to_image(_run(net, to_tensor(work).to(dev), fast).float().cpu())


def compare_grid(models: list[StyleModel], image: Image.Image, max_size: int = 512,
                 labels: list[str] | None = None, gates: list[float | None] | None = None,
                 styles: list[str | None] | None = None, **kw: Any) -> Image.Image:
    """One labelled grid: the input, then each model's result (BIN paper, Fig. 4/5).
    ``gates`` gives a per-cell BIN gate override (None = learned ρ), ``styles`` a per-cell style
    or blend of a multi-style model (None = its first style)."""
    if not models:
        raise ValueError("compare needs at least one model")
    gates = list(gates) if gates is not None else [None] * len(models)
    if len(gates) != len(models):
        raise ValueError(f"{len(gates)} gate values for {len(models)} models")
    styles = list(styles) if styles is not None else [None] * len(models)
    if len(styles) != len(models):
        raise ValueError(f"{len(styles)} styles for {len(models)} models")
    src = _to_rgb_or_rgba(image).convert("RGB")
    if max(src.size) > max_size:
        s = max_size / max(src.size)
        src = src.resize((max(1, round(src.size[0] * s)), max(1, round(src.size[1] * s))),
                         Image.LANCZOS)
    names = labels or [(st if st else f"{m.name} ({m.config.norm}"
                        + (f", gate {g:+g})" if g is not None else ")"))
                       for m, g, st in zip(models, gates, styles)]
    cells = [("input", src)] + [(n, stylize_image(m, src, gate=g, style=st, **kw))
                                for n, m, g, st in zip(names, models, gates, styles)]
    cols = min(len(cells), 5)
    rows = (len(cells) + cols - 1) // cols
    w, h = src.size
    pad, label_h = 8, 22
    grid = Image.new("RGB", (cols * (w + pad) + pad, rows * (h + label_h + pad) + pad), "white")
    draw = ImageDraw.Draw(grid)
    try:
        font = ImageFont.load_default(size=14)
    except TypeError:  # Pillow < 10.1
        font = ImageFont.load_default()
    for i, (label, im) in enumerate(cells):
        r, c = divmod(i, cols)
        x0, y0 = pad + c * (w + pad), pad + r * (h + label_h + pad)
        grid.paste(im.convert("RGB"), (x0, y0))
        draw.text((x0 + 2, y0 + h + 3), label, fill="black", font=font)
    return grid
