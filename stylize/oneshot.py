"""Stylizing without importing torch: a model whose ONNX export is cached (``stylize.deploy``)
runs in onnxruntime with PIL and numpy only. Importing torch takes 1.2–1.7 s and exiting a
process that loaded it ~0.6 s, more than stylizing a 512² photo, so a one-shot ``stylize run``
takes this path when it can and says so (``None``) when it cannot: the caller then loads the
model in torch as usual (which also creates the cache entry for the next run)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image

BACKENDS = ("auto", "torch", "onnxruntime", "compiled")
# A job of at least this many images (or a model used this often in one process) is "long":
# on a native-bf16 CPU "auto" may then compile (see ``stylize.infer.resolve_backend``).
LONG_JOB_IMAGES = 4
# A job this large (pixels; 64 photos of 512², 16 frames of 1024²) is worth probing whether
# compiled bf16 pays: compiling takes ~25 CPU-s on a 2-core EPYC (over 100 s of wall time on a
# loaded one), a compiled bf16 pass saves a fraction of a second per megapixel.
PROBE_MIN_PIXELS = 16_000_000


def finish_output(src: Image.Image, out: Image.Image, preserve_color: bool = False,
                  strength: float = 1.0) -> Image.Image:
    """The network's RGB output brought back to ``src``: its size (bicubic), its chroma when
    ``preserve_color`` (luminance from the output, YCbCr), blended with it when ``strength`` < 1."""
    if out.size != src.size:
        out = out.resize(src.size, Image.BICUBIC)
    if preserve_color:
        yy = out.convert("YCbCr").getchannel("Y")
        _, cb, cr = src.convert("YCbCr").split()
        out = Image.merge("YCbCr", (yy, cb, cr)).convert("RGB")
    if strength < 1.0:
        out = Image.blend(src, out, strength)
    return out


def model_file(spec: str) -> tuple[Path, str] | None:
    """(file, display name) of a shipped model name or a ``.safetensors`` file; None for
    anything else (``.pth`` imports, unknown names: the torch path explains those)."""
    import weights

    if spec in weights.names("stylize"):
        return weights.path(spec, "stylize"), spec
    p = Path(spec)
    if p.suffix.lower() == ".safetensors" and p.is_file():
        return p, (p.parent.name if p.stem == "model" and p.parent.name else p.stem)
    return None


class CachedModel:
    """A style model file whose verified ONNX export is in the cache, with its metadata."""

    def __init__(self, path: Path, name: str, meta: dict[str, Any], onnx_path: Path) -> None:
        self.path, self.name, self.meta, self.onnx_path = path, name, meta, onnx_path
        self._runner = None

    @property
    def base_channels(self) -> int:
        return int(self.meta["config"]["base_channels"])

    def run(self, rgb: np.ndarray) -> np.ndarray:
        """H×W×3 uint8 → H×W×3 uint8, as ``engine.images.to_image`` rounds."""
        from .deploy import runner_for

        if self._runner is None:
            self._runner = runner_for(self.onnx_path)
        x = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)
        y = self._runner.run_array(x)[0]
        return np.clip(np.round(y), 0, 255).astype(np.uint8).transpose(1, 2, 0)


def cached_model(spec: str) -> CachedModel | None:
    """The cached export of ``spec`` (shipped name or .safetensors), found by the hash of the
    file's bytes and the export settings and verified; None when there is none, or the model is
    not a single-style normlab style model (multi-style exports hold one style)."""
    from .deploy import cache_key, file_sha256, lookup, read_header_metadata

    found = model_file(spec)
    if found is None:
        return None
    path, name = found
    try:
        meta = read_header_metadata(path)
        cfg = meta.get("config")
        if meta.get("kind") not in ("style", "stylize") or not isinstance(cfg, dict) \
                or int(cfg.get("num_styles", 1)) != 1 or not isinstance(cfg.get("base_channels"), int):
            return None
        onnx_path = lookup(cache_key(file_sha256(path)))
    except (ValueError, OSError):
        return None  # the torch path gives the one-line error
    return None if onnx_path is None else CachedModel(path, name, meta, onnx_path)


def stylize_cached(model: CachedModel, image: Image.Image, *, max_size: int | None = None,
                   preserve_color: bool = False, strength: float = 1.0) -> Image.Image:
    """``stylize.stylize_image`` for the untiled onnxruntime path, torch-free (same rounding,
    resizing, colour preservation, strength and alpha handling)."""
    from engine.images import _to_rgb_or_rgba

    image = _to_rgb_or_rgba(image)
    alpha = image.getchannel("A") if image.mode == "RGBA" else None
    src = image.convert("RGB")
    work = src
    if max_size and max(src.size) > max_size:
        s = max_size / max(src.size)
        work = src.resize((max(1, round(src.size[0] * s)), max(1, round(src.size[1] * s))),
                          Image.LANCZOS)
    out = Image.fromarray(model.run(np.asarray(work)), mode="RGB")
    out = finish_output(src, out, preserve_color, strength)
    if alpha is not None:
        out.putalpha(alpha)
    return out


def _native_bf16_by_flags() -> bool:
    from engine.devices import cpu_flags

    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def run_jobs_cached(model: str, jobs: list[tuple[Path, Path]], *, device: str, backend: str,
                    max_size: int | None, max_memory: int | None, preserve_color: bool,
                    strength: float, save: Callable[[Image.Image, Path], None],
                    failed: list[str], single: bool) -> list[tuple[Path, Path]]:
    """Do what ``stylize run`` jobs it can without torch: the model's export is cached, the
    device is the CPU (``auto`` where no GPU device exists), the job is short (or the CPU has no
    native bf16, so "auto" would not compile anyway) and each image fits the memory budget
    untiled. Returns the jobs left for the torch path (all of them when this path does not
    apply). Unreadable inputs go to ``failed``; a single input raises."""
    from engine.devices import no_accelerator_here
    from engine.images import load_image

    from .tiling import max_image_pixels, plan_memory

    if not (device == "cpu" or (device == "auto" and no_accelerator_here())):
        return jobs
    if backend == "auto" and len(jobs) >= LONG_JOB_IMAGES and _native_bf16_by_flags():
        pixels = 0
        for src, _ in jobs:
            try:
                with Image.open(src) as im:
                    pixels += im.size[0] * im.size[1]
            except Exception:  # noqa: BLE001 - reported when the image is loaded
                pass
        if pixels >= PROBE_MIN_PIXELS:
            return jobs  # torch decides between compiled bf16 and onnxruntime (cached probe)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return jobs
    cached = cached_model(model)
    if cached is None:
        return jobs
    if not 0.0 <= strength <= 1.0 or (max_size is not None and max_size < 16):
        return jobs  # the torch path gives the error
    for i, (src, dst) in enumerate(jobs):
        try:
            img = load_image(src, max_pixels=max_image_pixels(max_memory, "cpu"))
        except ValueError as exc:
            if single:
                raise
            failed.append(str(exc))
            continue
        w, h = img.size
        if max_size and max(w, h) > max_size:
            s = max_size / max(w, h)
            w, h = max(1, round(w * s)), max(1, round(h * s))
        plan = plan_memory(w, h, cached.base_channels, device="cpu", max_memory=max_memory)
        if plan.tile is not None:
            return jobs[i:]  # tiles run in torch
        save(stylize_cached(cached, img, max_size=max_size, preserve_color=preserve_color,
                            strength=strength), dst)
    return []
