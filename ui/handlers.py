"""The UI's handler functions: a few lines each over the stylize / classify / experiments
libraries.

Every function here takes and returns plain values (PIL images, file paths, strings, lists,
matplotlib figures) and raises ``ValueError`` with one line on bad input; ``ui.app`` wires them
to gradio components and turns those errors into ``gr.Error`` messages (``public_message`` strips
server paths first). No gradio import here.

Trust boundary: every value that reaches a loader is one the server offered (a dropdown choice,
a shift name) or a file the user uploaded; anything else is refused before a loader sees it.
"""
from __future__ import annotations

import contextlib
import hashlib
import re
import time
import uuid
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

import classify as clf_lib
from classify import analysis as clf_analysis  # (the package loads its modules lazily)
import experiments  # noqa: F401  (registers style:MODEL shifts with classify)
import norms
import weights
from engine.devices import resolve_device
from engine.images import load_image
from experiments import lab
from stylize import compare_grid, load_model, stylize_image
from stylize.infer import processing_size, warm_in_background
from stylize.model import style_names
from stylize.tiling import activation_bytes_per_pixel, plan_memory
from stylize.video import LiveStylizer, probe_video
from stylize.video import stylize_video as run_video

from .config import UIConfig

SHIPPED_TAG = "shipped"
TRAINED_PREFIX = "ui:"


def device_of(cfg: UIConfig) -> str:
    return str(resolve_device(cfg.device))


# absolute POSIX / Windows paths, e.g. /tmp/gradio/ab12/x.jpg or C:\Users\x\y.png
_PATH = re.compile(r"(?:[A-Za-z]:\\|/)(?:[^\s'\"`:,;()<>]+[/\\])+([^\s'\"`:,;()<>/\\]*)")


def public_message(text: str) -> str:
    """``text`` (an error message) with every absolute server path cut to its file name, first
    line only: what may be shown to a browser."""
    text = str(text).strip().splitlines()[0] if str(text).strip() else "error"
    return _PATH.sub(lambda m: m.group(1) or "(server folder)", text)


# --------------------------------------------------------------------------- model lists

def model_choices(cfg: UIConfig, kind: str) -> list[tuple[str, str]]:
    """(label, value) pairs for a model dropdown: shipped models by name, then the models trained
    in this UI as ``ui:<name>``."""
    out = [(f"{n} ({SHIPPED_TAG})", n) for n in weights.list(kind)]
    out += [(f"{n} (trained here)", TRAINED_PREFIX + n) for n in cfg.registry.names(kind)]
    return out


def lab_choices(cfg: UIConfig) -> list[tuple[str, str]]:
    """Models of both kinds for the Norms lab, values ``stylize:<value>`` / ``classify:<value>``."""
    return [(f"{kind}: {label}", f"{kind}:{value}")
            for kind in ("stylize", "classify") for label, value in model_choices(cfg, kind)]


def resolve_spec(cfg: UIConfig, kind: str, choice: str | None) -> str:
    """The library spec (shipped name or file path) behind a dropdown value; ``ValueError`` for a
    value that is not on the list (API clients can send anything)."""
    if not choice:
        raise ValueError(f"pick a {'style' if kind == 'stylize' else 'classifier'} model first")
    if choice.startswith(TRAINED_PREFIX):
        p = cfg.registry.path_of(kind, choice[len(TRAINED_PREFIX):])
        if p is not None:
            return str(p)
    elif choice in weights.list(kind):
        return choice  # the library resolves shipped names (weights.resolve)
    known = ", ".join(v for _, v in model_choices(cfg, kind)) or "none"
    raise ValueError(f"unknown {kind} model {public_message(choice)!r}; available: {known}")


def load_style(cfg: UIConfig, choice: str | None, upload: str | None = None):
    """The ``stylize.StyleModel`` for a dropdown value, or for an uploaded model file (which wins).
    Only ``stylize.load_model`` reads model files: it validates the config in the file's metadata
    with bounds before any tensor is allocated."""
    load = load_model
    if upload:
        suffix = Path(upload).suffix.lower()
        if suffix not in {".safetensors", ".pth", ".pt"}:
            raise ValueError(f"model files must be .safetensors or .pth, got {Path(upload).name}")
        try:
            return load(upload, device=device_of(cfg))
        except ValueError as exc:
            raise ValueError("the uploaded model: " + public_message(exc)) from None
    return load(resolve_spec(cfg, "stylize", choice), device=device_of(cfg))


def load_classifier(cfg: UIConfig, choice: str | None):
    """The ``classify.Classifier`` for a dropdown value (``classify.load_classifier``)."""
    return clf_lib.load_classifier(resolve_spec(cfg, "classify", choice), device=device_of(cfg))


def read_image(cfg: UIConfig, image: Image.Image | str | Path | None,
               what: str = "an image") -> Image.Image:
    """An uploaded image as RGB: a file path is decoded with ``engine.images.load_image`` (EXIF,
    16-bit, CMYK, palette, bomb limit); ``ValueError`` when missing, unreadable or over the pixel
    limit, worded without server paths."""
    if image is None or image == "":
        raise ValueError(f"upload {what} first")
    if isinstance(image, (str, Path)):
        check_image_size(cfg, image)
        try:
            image = load_image(image, max_pixels=cfg.max_pixels)
        except ValueError as exc:
            text = public_message(exc)
            if "too large" in text or "over the limit" in text:
                text = too_large_message(cfg, None)
            elif "not an image" in text:
                text = "the uploaded file is not an image this server can read (JPEG, PNG, …)"
            elif "truncated" in text or "corrupt" in text:
                text = "the uploaded image is truncated or corrupt"
            raise ValueError(text) from None
    if image.size[0] * image.size[1] > cfg.max_pixels:
        raise ValueError(too_large_message(cfg, image.size))
    return image if image.mode == "RGB" else image.convert("RGB")


def too_large_message(cfg: UIConfig, size: tuple[int, int] | None) -> str:
    """"12000×9000 (108 MP) is larger than this server's limit of 67 MP; …" (one line)."""
    what = f"{size[0]}×{size[1]} ({size[0] * size[1] / 1e6:.3g} MP)" if size else "the image"
    return (f"{what} is larger than this server's limit of {cfg.max_pixels / 1e6:.3g} MP; "
            "resize it or raise --memory-budget")


def image_size_of(path: str | Path) -> tuple[int, int] | None:
    """An image file's (width, height) from its header, without decoding it (None when Pillow
    cannot read the header, or refuses it as a bomb before telling the size)."""
    try:
        with Image.open(path) as im:
            return im.size
    except Exception:  # noqa: BLE001 - not an image / a bomb: load_image words those
        return None


def check_image_size(cfg: UIConfig, path: str | Path | None) -> str:
    """The size-limit message for an uploaded image file that is over ``cfg.max_pixels`` (shown
    on upload, before any work), else ``""``; raised as ``ValueError`` by ``read_image``."""
    if not path:
        return ""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Pillow's bomb warning: our own limit speaks instead
        size = image_size_of(path)
    if size is not None and size[0] * size[1] > cfg.max_pixels:
        raise ValueError(too_large_message(cfg, size))
    return ""


# --------------------------------------------------------------------------- stylize

OUTPUT_SIZES = ("input size", "processing size")


def request_budget(cfg: UIConfig) -> int:
    """The ``max_memory`` of one request: the library bounds the whole process (what is resident
    counts), and this request may add ``cfg.memory_budget_mb`` to it."""
    import psutil

    return psutil.Process().memory_info().rss + cfg.memory_budget_mb * 2**20


def check_memory(cfg: UIConfig, model, size: tuple[int, int]) -> None:
    """Refuse a compare-grid request whose passes would not fit ``cfg.memory_budget_mb`` untiled:
    the grid holds every result at the processing size, so it is not tiled (single images are:
    ``stylize`` passes the budget to the library, which tiles). The library's memory model
    (``stylize.tiling.plan_memory``) decides."""
    plan = plan_memory(size[0], size[1], model.config, device="cpu", max_memory=request_budget(cfg))
    if plan.tile is not None:
        per_px = activation_bytes_per_pixel(model.config)
        fit = int((plan.activation_budget / per_px) ** 0.5 * max(size)
                  / (size[0] * size[1]) ** 0.5) // 16 * 16
        raise ValueError(f"stylizing at {size[0]}×{size[1]} px needs about "
                         f"{size[0] * size[1] * per_px / 2**30:.1f} GB of memory; this server "
                         f"allows {cfg.memory_budget_mb / 1024:.1f} GB per request: set the size "
                         f"to {max(fit, 16)} px or less")


def stylize(cfg: UIConfig, image: Image.Image | str | None, choice: str | None,
            upload: str | None = None, strength: float = 1.0, preserve_color: bool = False,
            max_size: int | None = None, gate: float | None = None,
            output_size: str = "input size",
            on_progress: Callable[[int, int], None] | None = None,
            style: str | None = None, blend_with: str | None = None,
            blend_weight: float = 0.5) -> Image.Image:
    """Stylize one image with ``stylize.stylize_image``. The network runs at ``max_size`` (longest
    side; 0/None = full size); the result comes back at the input's size (scaled up, so softer
    than the processing size) or, with ``output_size="processing size"``, at the processing size.
    ``gate`` None = the learned ρ, else push every ρ toward IN (-1) or BN (+1).
    ``on_progress(done, total)`` follows the network's stages or tiles of a large image.
    ``style`` picks or blends the styles of a multi-style model ("candy", "candy:0.5,mosaic:0.5",
    see ``stylize.model.style_selection``), ``blend_with``/``blend_weight`` mix a second one in
    (``blend_spec``: a {style: weight} mapping); ignored for one-style models."""
    style = blend_spec(style, blend_with, blend_weight)
    image = read_image(cfg, image)
    if output_size not in OUTPUT_SIZES:
        raise ValueError(f"output size must be one of: {', '.join(OUTPUT_SIZES)}")
    model = load_style(cfg, choice, upload)
    if gate is not None and not model.has_gates:
        gate = None  # the slider is hidden for gate-less models; ignore a stale value
    work = processing_size(image.size, int(max_size) if max_size else None)
    if output_size == "processing size" and work != image.size:
        image = image.resize(work, Image.LANCZOS)
    names = style_names_of(model)
    budget = request_budget(cfg)
    return stylize_image(model, image, max_size=int(max_size) if max_size else None,
                         preserve_color=bool(preserve_color), strength=float(strength), gate=gate,
                         device=device_of(cfg), bar=False, progress=on_progress, max_memory=budget,
                         style=style if names and style else None)


def _painting_tensor(cfg: UIConfig, painting: Image.Image | str | None, longest: int) -> torch.Tensor:
    """An uploaded painting (checked like every upload) as ``stylize.arbitrary.fit_painting``."""
    from stylize.arbitrary import fit_painting

    if painting is None:
        raise ValueError("upload a painting (any image) to take the style from")
    return fit_painting(read_image(cfg, painting), longest)


_STYLIZERS: dict[tuple[str, str], object] = {}


def painting_stylizer(cfg: UIConfig):
    """The encoder + shipped decoders (``stylize.arbitrary``), loaded once per server."""
    from stylize.arbitrary import load_stylizer, use_backend
    from stylize.losses import find_encoder

    key = (str(cfg.vgg_weights), device_of(cfg))
    if key not in _STYLIZERS:
        dev = resolve_device(key[1])
        # the CLI's --backend auto: onnxruntime on CPU (about half the torch time), torch on GPU
        _STYLIZERS[key] = use_backend(load_stylizer(find_encoder(cfg.vgg_weights), device=dev),
                                      "auto", dev)
    return _STYLIZERS[key]


def stylize_painting(cfg: UIConfig, image: Image.Image | str | None,
                     painting: Image.Image | str | None, method: str = "wct",
                     alpha: float = 1.0, max_size: int | None = 512,
                     preserve_color: bool = False,
                     on_progress: Callable[[int, int], None] | None = None,
                     refine: int = 0,
                     on_refine: Callable[[int, int], None] | None = None) -> Image.Image:
    """Any painting in one forward pass (``stylize.arbitrary``: encoder → WCT/AdaIN → decoders);
    the photo is processed at ``max_size`` (longest side) and comes back at its own size.
    ``refine``: that many optimiser iterations from the one-pass result (sharper strokes)."""
    from stylize.arbitrary import METHODS, stylize_with_paintings

    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"style strength must be in [0, 1], got {alpha}")
    if not 0 <= int(refine) <= 200:
        raise ValueError(f"refine iterations must be 0–200, got {refine}")
    photo = read_image(cfg, image)
    work = processing_size(photo.size, int(max_size) if max_size else None)
    st = painting_stylizer(cfg)
    dev = next(st.parameters()).device
    style = _painting_tensor(cfg, painting, max(work)).to(dev)
    stats = st.style_statistics([style], None, method)
    return stylize_with_paintings(st, photo, {}, method=method, alpha=float(alpha), scales=(1,),
                                  max_size=max(work), preserve_color=bool(preserve_color),
                                  stats=stats, progress=on_progress, refine=int(refine),
                                  refine_progress=on_refine, refine_styles=[style])


def optimize_painting(cfg: UIConfig, image: Image.Image | str | None,
                      painting: Image.Image | str | None, size: int = 384,
                      iterations: str = "100,60,30", style_weight: float = 5.0,
                      on_progress: Callable[[int, int], None] | None = None,
                      should_stop: Callable[[], bool] | None = None) -> Image.Image:
    """Slow but best (``stylize.optimize``, Gatys et al.): the image itself optimised, coarse to
    fine, for ``size`` px (longest side); ``should_stop`` ends early with the image so far."""
    from engine.images import to_image, to_tensor
    from stylize.optimize import OptimizeConfig, optimize

    photo = read_image(cfg, image).convert("RGB")
    try:
        iters = [int(v) for v in str(iterations).replace(" ", "").split(",") if v]
    except ValueError:
        raise ValueError(f"iterations must be whole numbers like 100,60,30, got {iterations!r}") from None
    cfg_opt = OptimizeConfig(size=int(size), iterations=iters, style_weight=float(style_weight))
    cfg_opt.validate()
    enc = painting_stylizer(cfg).encoder
    dev = next(enc.parameters()).device
    style = _painting_tensor(cfg, painting, int(size)).to(dev)
    res = optimize(to_tensor(photo).to(dev), [style], enc, cfg_opt,
                   progress=(lambda d, t, _: on_progress(d, t)) if on_progress else None,
                   should_stop=should_stop)
    return to_image(res.image.cpu())


def save_result(cfg: UIConfig, img: Image.Image, source: str | Path | None,
                painting: str | Path | None, tag: str) -> str:
    """A result as a PNG named ``<photo>-<painting>-<tag>.png`` (see ``output_path``)."""
    label = f"{Path(painting).stem if isinstance(painting, (str, Path)) else 'painting'}-{tag}"
    dst = output_path(cfg, "images", source, None, label, ".png")
    tmp = dst.with_name(dst.stem + ".part.png")
    img.save(tmp)
    tmp.replace(dst)
    return str(dst)


def stylize_file(cfg: UIConfig, image: str | None, choice: str | None,
                 upload: str | None = None, **kw) -> str:
    """``stylize`` into a PNG named after the input and the style (``tubingen-mosaic.png``), so a
    download keeps a meaningful name; returns its path."""
    out = stylize(cfg, image, choice, upload, **kw)
    model = load_style(cfg, choice, upload)
    style = blend_spec(kw.get("style"), kw.get("blend_with"), kw.get("blend_weight", 0.5))
    dst = output_path(cfg, "images", image, model,
                      style if style_names_of(model) else None, ".png")
    tmp = dst.with_name(dst.stem + ".part.png")
    out.save(tmp)
    tmp.replace(dst)
    return str(dst)


NO_BLEND = "none"


def blend_spec(style: str | None, blend_with: str | None, weight: float | None
               ) -> str | dict[str, float] | None:
    """The style selection for the Style box plus the "Blend with" box and its weight (the
    second style's share): ``{first: 1 - w, second: w}``, handed to the library as a mapping (no
    string for it to parse again); the first style alone when no second style is picked, when it
    is the same style, or at weight 0; the second alone at weight 1. A blend typed into the Style
    box ("candy:0.5,mosaic:0.5") goes to the library as typed."""
    second = (blend_with or "").strip()
    first = (style or "").strip()
    if not second or second.lower() == NO_BLEND:
        return first or None
    first = first or "0"  # the model's first style when none is picked
    if ":" in first or "," in first:
        raise ValueError("the Style box already holds a blend: clear it or set Blend with to none")
    w = float(0.5 if weight is None else weight)
    if not 0 <= w <= 1:
        raise ValueError(f"blend weight must be between 0 and 1, got {w:g}")
    if second.lower() == first.lower() or w == 0:
        return first
    if w == 1:
        return second
    return {first: 1 - w, second: w}


def style_names_of(model) -> list[str]:
    """The style names of a multi-style model (``[]`` for a model with one style)."""
    n = norms.num_styles(model.net)
    return style_names(model.meta or {}, n) if n > 1 else []


def default_style_model(choices: list[tuple[str, str]]) -> str | None:
    """The dropdown value the Stylize tab opens on: the shipped model with the most styles (so a
    first visit shows the style and blend controls), else the first choice."""
    import weights

    if not choices:
        return None
    entries = weights.manifest()
    counts = [len(entries.get(v, {}).get("styles", [])) for _, v in choices]
    return choices[counts.index(max(counts))][1]  # the first of the richest


def shipped_styles(choice: str | None) -> list[str]:
    """The styles the manifest lists for a shipped model (no weights are loaded), so the page
    can be built with the Style box already shown; empty for other values."""
    import weights

    return list(weights.manifest().get(choice or "", {}).get("styles", [])) if choice else []


def style_choices(cfg: UIConfig, choice: str | None, upload: str | None = None) -> list[str]:
    """The styles of the chosen model for the Style box (empty for one-style models)."""
    if not choice and not upload:
        return []
    return style_names_of(load_style(cfg, choice, upload))


def style_model_info(cfg: UIConfig, choice: str | None, upload: str | None = None
                     ) -> tuple[str, bool]:
    """(markdown about the model, whether it has BIN gates) for the Stylize tab."""
    if not choice and not upload:
        return "No model selected.", False
    model = load_style(cfg, choice, upload)
    meta = model.meta or {}
    shown = Path(upload).name if upload else choice
    lines = [f"**{shown}** · norm `{model.config.norm}`"]
    styles = style_names_of(model)
    if styles:  # a multi-style model: its "style" key is only the first one
        lines.append(f"{len(styles)} styles: {', '.join(styles)}")
    lines += [f"{key}: {meta[key]}" for key in ("style", "steps")
              if key in meta and not (styles and key == "style")]
    if model.has_gates:
        rep = norms.gate_report(model.net)
        mean = torch.cat([L.values for L in rep.layers]).mean().item()
        lines.append(f"BIN gates: {len(rep.layers)} layers, mean ρ {mean:.2f} (0 = IN, 1 = BN); "
                     "tick “Override” to move them with the gate slider")
    return " · ".join(lines), model.has_gates


def compare(cfg: UIConfig, image: Image.Image | str | None, choices: list[str] | None,
            max_size: int = 512) -> Image.Image:
    """One labelled grid: the image through each chosen style model (``stylize.compare_grid``)."""
    return compare_cells(cfg, image, choices, max_size)[0]


def compare_caption(labels: list[str]) -> str:
    """The grid's cells as text (the labels drawn under small cells can be cut off)."""
    if not labels:
        return ""
    cells = " · ".join(f"**{i + 1}.** {lab}" for i, lab in enumerate(labels))
    return f"Left to right after the input (model · style · norm): {cells}"


def compare_cells(cfg: UIConfig, image: Image.Image | str | None, choices: list[str] | None,
                  max_size: int = 512) -> tuple[Image.Image, list[str]]:
    """``compare``'s grid and the label of each cell (model · style used · norm)."""
    image = read_image(cfg, image)
    if not choices:
        raise ValueError("pick at least one model to compare")
    models = [load_style(cfg, c) for c in choices]
    max_size = int(max_size or 512)
    for m in models:
        check_memory(cfg, m, processing_size(image.size, max_size))
    # each cell says which model, style and norm it used (a multi-style model: its first style)
    labels = [f"{c.removeprefix(TRAINED_PREFIX)} · {style_label(m, None)} · {m.config.norm}"
              for c, m in zip(choices, models)]
    return compare_grid(models, image, max_size=max_size, labels=labels), labels


def model_norm(cfg: UIConfig, kind: str, value: str) -> str | None:
    """The norm a model on the list uses, from the manifest or the UI registry (no loading)."""
    if value.startswith(TRAINED_PREFIX):
        name = value[len(TRAINED_PREFIX):]
        return next((e.get("norm") for e in cfg.registry.entries(kind) if e["name"] == name),
                    None)
    return weights.manifest().get(value, {}).get("norm")


def distinct_norm_choices(cfg: UIConfig, kind: str, limit: int = 4) -> list[str]:
    """Up to ``limit`` models that differ in norm (one per norm, in list order), then others to
    fill: what "Compare norms" opens on."""
    values = [v for _, v in model_choices(cfg, kind)]
    seen: set[str] = set()
    first: list[str] = []
    for v in values:
        norm = (model_norm(cfg, kind, v) or v).split(" ")[0]
        if norm not in seen:
            seen.add(norm)
            first.append(v)
    return (first + [v for v in values if v not in first])[:limit]


# --------------------------------------------------------------------------- style gallery

THUMB_SIDE = 160  # px, longest side of a style thumbnail


def style_image_of(cfg: UIConfig, style: str) -> Path | None:
    """The painting a style was trained on, when it is in an allowed folder (``<style>.jpg``)."""
    for d in cfg.allowed_dirs:
        for ext in (".jpg", ".jpeg", ".png"):
            p = d / f"{style}{ext}"
            if p.is_file():
                return p
    return None


def style_gallery(cfg: UIConfig) -> list[tuple[str, str, str, str | None]]:
    """One thumbnail per style of every model on offer: ``(thumbnail PNG, caption, model value,
    style or None)``. The thumbnail is the painting when it is found in an allowed folder, else
    the first sample photo in that style; each is made once and kept under ``cfg.output_dir``."""
    from weights import SAMPLES_DIR

    out: list[tuple[str, str, str, str | None]] = []
    thumbs = cfg.output_dir / "thumbs"
    thumbs.mkdir(parents=True, exist_ok=True)
    sample = next(iter(sorted(SAMPLES_DIR.glob("*.jpg"))), None)
    for _, value in model_choices(cfg, "stylize"):
        try:
            model = load_style(cfg, value)
        except ValueError:
            continue
        styles = style_names_of(model) or [None]
        for style in styles:
            shown = style or style_label(model, None)
            name = value.removeprefix(TRAINED_PREFIX)
            f = weights.resolve(resolve_spec(cfg, "stylize", value), "stylize")
            key = hashlib.sha1(f"{f.resolve()}|{f.stat().st_mtime_ns}".encode()).hexdigest()[:10]
            dst = thumbs / f"{_slug(name, 'model')}--{_slug(shown, 'style')}-{key}.png"
            if not dst.is_file():
                painting = style_image_of(cfg, shown)
                if painting is not None:
                    im = load_image(painting).convert("RGB")
                    im.thumbnail((THUMB_SIDE, THUMB_SIDE))
                elif sample is not None:
                    im = stylize(cfg, str(sample), value, max_size=THUMB_SIDE,
                                 output_size="processing size", style=style)
                else:
                    continue
                tmp = dst.with_suffix(".tmp.png")
                im.save(tmp)
                tmp.replace(dst)
            # spaces, not underscores: a caption wraps at them under its thumbnail
            out.append((str(dst), f"{shown.replace('_', ' ')} · {name}", value, style))
    return out



# --------------------------------------------------------------------------- webcam and video

WEBCAM_SIZE = 320  # longest side the webcam frames are stylized at
SMOOTH_MOMENTUM = 0.9  # EMA momentum of the statistics when smoothing (webcam and video)
# a gap this long between webcam frames is a new stream (the camera was stopped and restarted)
WEBCAM_RESET_AFTER_S = 5.0
NOT_A_VIDEO = "the uploaded file is not a video this server can read (MP4, WebM, MOV, MKV, …)"
VIDEO_KEEP_S = 3600  # stylized videos older than this are removed from cfg.output_dir


def webcam_frame(cfg: UIConfig, frame: Image.Image | str | None, choice: str | None,
                 strength: float = 1.0, preserve_color: bool = False, smooth: bool = False,
                 live=None, style: str | dict[str, float] | None = None):
    """One webcam frame stylized at ``WEBCAM_SIZE``: ``(image, live)``.

    ``smooth`` off: the frame alone (``stylize``), ``live`` comes back None; on a CPU with
    native bf16 the first frame of a size starts compiling the bf16 path for it in the
    background (``stylize.infer.warm_in_background``) and later frames take it (~0.3× the fp32
    time) without any frame waiting for the compilation. A single photo does not: at 512²
    compiling takes ~10 s of both cores and saves ~0.3 s a photo (docs/benchmarks.md), and
    photos come in many sizes. ``smooth`` on (eager: the moving statistics live in the norm
    layers): the
    frame continues the stream held by ``live`` (a ``stylize.video.LiveStylizer``: per-layer
    moving averages of the normalization statistics, ``norms.StreamState``), created on the first
    frame and again when the model or device changed; the caller keeps it for the next frame (one
    per browser session). A pause over ``WEBCAM_RESET_AFTER_S`` starts a new stream.
    ``style``: a multi-style model's style or blend (``blend_spec``), as for a still."""
    if frame is None:
        return None, live
    if not smooth:
        image = read_image(cfg, frame, "a webcam frame")
        warm_in_background(load_style(cfg, choice), image.size, device=device_of(cfg),
                           max_size=WEBCAM_SIZE)
        return stylize(cfg, image, choice, None, strength, preserve_color, WEBCAM_SIZE,
                       style=style), None
    image = read_image(cfg, frame, "a webcam frame")
    model = load_style(cfg, choice)
    dev = device_of(cfg)
    if live is None or live.model is not model or str(live.device) != dev:
        live = LiveStylizer(model, smooth=SMOOTH_MOMENTUM, max_size=WEBCAM_SIZE, device=dev,
                            reset_after=WEBCAM_RESET_AFTER_S)
    return live(image, strength=float(strength), preserve_color=bool(preserve_color),
                style=style if style_names_of(model) and style else None), live


def _prune_outputs(folder: Path, keep_s: float = VIDEO_KEEP_S) -> None:
    cutoff = time.time() - keep_s
    for p in folder.glob("*-stylized-*"):
        try:
            if p.stat().st_mtime < cutoff:
                if p.is_dir():  # one result per folder (output_path)
                    for f in p.iterdir():
                        f.unlink()
                    p.rmdir()
                else:
                    p.unlink()
        except OSError:
            continue


def check_video(cfg: UIConfig, video: str | Path | None):
    """The ``stylize.video.VideoInfo`` of an uploaded video, or a one-line ``ValueError`` when it
    is missing, not a readable video, over ``cfg.max_video_frames`` / ``max_video_seconds``, or
    larger per frame than ``cfg.max_pixels``, or a still image."""
    if not video:
        raise ValueError("upload a video first")
    try:
        info = probe_video(video)
    except ValueError:
        raise ValueError(NOT_A_VIDEO) from None
    if info.still_image:
        raise ValueError("the uploaded file is a still image, not a video: use the image input "
                         "above")
    if info.seconds is not None and info.seconds > cfg.max_video_seconds:
        raise ValueError(f"the video is {info.seconds:.0f} s long; this server stylizes at most "
                         f"{cfg.max_video_seconds:g} s (trim it first)")
    if info.frames is not None and info.frames > cfg.max_video_frames:
        raise ValueError(f"the video has about {info.frames} frames; this server stylizes at "
                         f"most {cfg.max_video_frames} (trim it first)")
    if info.width * info.height > cfg.max_pixels:
        raise ValueError(f"the video's frames are {info.width}×{info.height}; this server "
                         f"accepts at most {cfg.max_pixels / 1e6:.0f} MP per frame")
    return info


def stylize_video(cfg: UIConfig, video: str | Path | None, choice: str | None,
                  upload: str | None = None, smooth: bool = True, max_size: int | None = 384,
                  gate: float | None = None,
                  on_progress: Callable[[int, int | None], None] | None = None,
                  style: str | dict[str, float] | None = None,
                  should_stop: Callable[[], bool] | None = None) -> tuple[str, str]:
    """Stylize an uploaded video with ``stylize.video.stylize_video`` (fps and audio kept;
    ``smooth``: statistics averaged over the frames, momentum ``SMOOTH_MOMENTUM``) into a new
    ``.mp4`` under ``cfg.output_dir``: ``(path, report summary)``. The network runs at
    ``max_size`` (longest side; 0/None = full size) within ``cfg.memory_budget_mb``.
    ``on_progress(done, total)`` per batch of frames (total None when unknown). ``style``: a
    multi-style model's style or blend (``blend_spec``), as for a still. ``should_stop()`` true
    ends the run at the next batch (``ValueError("stopped")``; nothing is written)."""
    info = check_video(cfg, video)
    model = load_style(cfg, choice, upload)
    if gate is not None and not model.has_gates:
        gate = None  # the slider is hidden for gate-less models; ignore a stale value
    cap = cfg.max_video_frames

    def progress(done: int, total: int | None) -> None:
        if done > cap:  # the container understated its length
            raise ValueError(f"the video has more than {cap} frames; this server stylizes at "
                             f"most {cap} (trim it first)")
        if should_stop is not None and should_stop():
            raise ValueError(STOPPED)
        if on_progress is not None:
            on_progress(done, total or info.frames)

    style = style if style_names_of(model) and style else None
    dst = output_path(cfg, "video", video, model, style, ".mp4")
    max_size = int(max_size) if max_size else None
    if on_progress is not None:
        on_progress(0, info.frames)  # the bar shows from the first second
    try:
        report = run_video(model, video, dst, smooth=SMOOTH_MOMENTUM if smooth else None,
                           max_size=max_size, gate=gate, device=device_of(cfg),
                           max_memory=cfg.memory_budget_mb * 2**20, progress=progress,
                           bar=False, style=style)
    except BaseException:
        with contextlib.suppress(OSError):
            dst.parent.rmdir()  # the library wrote nothing (atomic): leave no empty folder
        raise
    return str(dst), report.summary()


STOPPED = "stopped: nothing was written"


def _slug(text: str, default: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", str(text)).strip("-.")[:40] or default


def style_label(model, style: str | dict[str, float] | None) -> str:
    """A file-name part for the style used: the model's name, or the picked style / blend of a
    multi-style model (``candy``, ``candy70-mosaic30``)."""
    if isinstance(style, dict):
        return "-".join(f"{k}{round(v * 100)}" for k, v in style.items())
    if style:
        return str(style)
    meta = model.meta or {}
    names = style_names_of(model) or (style_names(meta, 1) if isinstance(meta.get("style"), str)
                                      else [])
    return names[0] if names else str(getattr(model, "name", "") or "style")


def output_path(cfg: UIConfig, what: str, source: str | Path | None, model, style,
                suffix: str) -> Path:
    """Where a result is written, named after the input and the style
    (``<input>-<style>.png``) in a folder of its own under ``cfg.output_dir`` (so two results
    never collide and the download keeps the name); outputs older than ``VIDEO_KEEP_S`` go."""
    out_dir = cfg.output_dir / what
    out_dir.mkdir(parents=True, exist_ok=True)
    _prune_outputs(out_dir)
    stem = _slug(Path(source).stem if isinstance(source, (str, Path)) and source else what, what)
    folder = out_dir / f"{uuid.uuid4().hex[:12]}-stylized-"
    folder.mkdir()
    return folder / f"{stem}-{_slug(style_label(model, style), 'style')}{suffix}"


# --------------------------------------------------------------------------- classify

def classifier_note(cfg: UIConfig) -> str:
    """What the classifiers on offer can recognise (the shipped ones: CIFAR-10's 10 classes)."""
    classes: set[tuple[str, ...]] = set()
    for _, value in model_choices(cfg, "classify"):
        if not value.startswith(TRAINED_PREFIX):
            try:
                classes.add(tuple(load_classifier(cfg, value).class_names))
            except ValueError:
                continue
    if not classes:
        return ""
    names = sorted(classes)[0]
    return (f"The shipped classifiers were trained on CIFAR-10 and know only its {len(names)} "
            f"classes ({', '.join(names)}), from 32×32 images: any photo is shrunk to 32×32 "
            "first (shown enlarged below the prediction). Models trained here know their "
            "dataset's classes.")


def classify(cfg: UIConfig, image: Image.Image | str | None, choice: str | None,
             topk: int = 5) -> dict[str, float]:
    """Top-k {class: probability} for one image (the shape ``gr.Label`` shows)."""
    return classify_with_view(cfg, image, choice, topk)[0]


def classify_with_view(cfg: UIConfig, image: Image.Image | str | None, choice: str | None,
                       topk: int = 5) -> tuple[dict[str, float], Image.Image]:
    """Top-k {class: probability} and the model's input, enlarged (``experiments.lab``)."""
    image = read_image(cfg, image)
    clf = load_classifier(cfg, choice)
    top = clf_lib.predict(clf, image, topk=max(1, int(topk)))
    return {name: float(p) for name, p in top}, lab.classifier_view(clf, image)


def shift_names() -> list[str]:
    """The appearance shifts classify offers, plus ``style:<model>`` for each shipped style
    model: the only values the Shift boxes accept."""
    names = list(clf_lib.SHIFTS)
    return names + [f"style:{n}" for n in weights.list("stylize") if f"style:{n}" not in names]


def check_shift(shift: str | None) -> str:
    """``shift`` if it is one of ``shift_names()``; else a ``ValueError`` that echoes nothing the
    client sent (a typed ``style:/some/path`` never reaches a model loader)."""
    if not shift:
        raise ValueError("pick a shift")
    offered = shift_names()
    if shift not in offered:
        raise ValueError("unknown shift: pick one from the list (" + ", ".join(offered) + ")")
    return shift


def shift_range(shift: str | None) -> tuple[float, float, float]:
    """(low, high, default) strength of a shift in its natural units (``style:*``: 0–1)."""
    spec = clf_lib.SHIFTS.get(shift or "")
    if spec is None:
        return 0.0, 1.0, 1.0
    return float(spec.lo), float(spec.hi), float(spec.default)


def apply_shift(cfg: UIConfig, image: Image.Image, shift: str | None,
                strength: float | None) -> Image.Image:
    """The image under an offered appearance shift (``classify.apply_shift``; None = default)."""
    return clf_lib.apply_shift(image, check_shift(shift), None if strength is None
                               else float(strength), device=device_of(cfg))


ShiftRow = lab.ShiftRow


def shift_explorer(cfg: UIConfig, image: Image.Image | str | None, choices: list[str] | None,
                   shift: str, strength: float) -> tuple[Image.Image, list[lab.ShiftRow]]:
    """The shifted image and, per classifier, top-1 before and after (``lab.shift_rows``)."""
    image = read_image(cfg, image)
    shift = check_shift(shift)
    if not choices:
        raise ValueError("pick at least one classifier")
    classifiers = {c: load_classifier(cfg, c) for c in choices}
    shifted = apply_shift(cfg, image, shift, strength)
    return shifted, lab.shift_rows(classifiers, image, shifted)


shift_table = lab.shift_rows_markdown


def shift_chart(rows: list[lab.ShiftRow], shift: str):
    """The shift explorer as a picture: per classifier, the probability of its original top-1
    class before and after the shift (grouped bars, the labels named on the bars)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 0.9 + 0.75 * len(rows)))
    ys = range(len(rows))
    before = [100 * r.p_top1 for r in rows]
    after = [100 * r.p_kept for r in rows]
    ax.barh([y + 0.2 for y in ys], before, height=0.38, color="#9aa5b1", label="original image")
    ax.barh([y - 0.2 for y in ys], after, height=0.38, color="#5b6cf0",
            label=f"shifted ({shift})")
    for y, r, b, a in zip(ys, rows, before, after):
        ax.text(b + 1, y + 0.2, f"{r.top1} {b:.0f} %", va="center", fontsize=8)
        now = f" → now {r.shifted_top1}" if r.changed else " (kept)"
        ax.text(a + 1, y - 0.2, f"{a:.0f} %{now}", va="center", fontsize=8)
    ax.set_yticks(list(ys), [f"{r.model}\n({r.norm})" for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 130)  # room for the labels right of the bars
    ax.set_xticks([0, 25, 50, 75, 100])
    ax.set_xlabel("probability of the original top-1 class (%)", fontsize=8)
    ax.legend(fontsize=8, loc="lower right")
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


# --------------------------------------------------------------------------- norms lab

def lab_model(cfg: UIConfig, choice: str | None):
    """The loaded style model or classifier behind a Norms-lab dropdown value."""
    if not choice or ":" not in choice:
        raise ValueError("pick a model first")
    kind, value = choice.split(":", 1)
    if kind == "stylize":
        return load_style(cfg, value)
    if kind == "classify":
        return load_classifier(cfg, value)
    raise ValueError("unknown model kind: pick a model from the list")


def gate_histograms(cfg: UIConfig, choice: str | None):
    """(matplotlib figure or None, markdown) of the BIN gates ρ of a model, by depth."""
    rep = norms.gate_report(lab.network_of(lab_model(cfg, choice)))
    if not rep:
        return None, (f"`{choice}` has no BIN gates (ρ): its norm layers are fixed, so there is "
                      "nothing learned to show. Pick a BIN model.")
    return rep.figure(title=f"BIN gate ρ by depth — {choice}"), rep.to_markdown()


ChannelStats = lab.ChannelStats
feature_figure = lab.feature_figure


def feature_stats(cfg: UIConfig, image: Image.Image | str | None, choices: list[str] | None,
                  depth: float, shift: str, strength: float
                  ) -> tuple[Image.Image, list[lab.ChannelStats]]:
    """The shifted image and, per chosen model, per-channel statistics of a norm layer's output
    for the image and its shifted copy (``experiments.lab.channel_stats``)."""
    image = read_image(cfg, image)
    shift = check_shift(shift)
    if not choices:
        raise ValueError("pick at least one model")
    models = {c: lab_model(cfg, c) for c in choices}
    shifted = apply_shift(cfg, image, shift, strength)
    return shifted, [lab.channel_stats(m, [image, shifted], depth, name=c)
                     for c, m in models.items()]


# --------------------------------------------------------------------------- divergence

Divergence = clf_analysis.Divergence


def _offered_data(cfg: UIConfig, data: str | None) -> str:
    """A dataset the server offered (``ui.training.dataset_dirs``), else one line."""
    from .training import dataset_dirs  # (training imports this module)

    if not data:
        raise ValueError("pick a dataset first")
    if data not in {v for _, v in dataset_dirs(cfg)}:
        raise ValueError("that dataset is not one of the operator-allowed datasets")
    return data


def divergence_domains(cfg: UIConfig, data: str | None) -> list[str]:
    """What a divergence can compare on ``data``: PACS's domains by name, or a folder dataset's
    ``test`` set; then every shift of that first set as ``shift:NAME``."""
    data = _offered_data(cfg, data)
    if data.startswith("pacs:"):
        root = Path(data[len("pacs:"):])
        base = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    else:
        base = ["test"]
    return base + [f"shift:{s}" for s in shift_names()]


def default_domains(domains: list[str]) -> tuple[str | None, str | None]:
    """The pair a divergence panel opens on: photo vs sketch (PACS), else test vs grayscale."""
    if "photo" in domains and "sketch" in domains:
        return "photo", "sketch"
    b = "shift:grayscale" if "shift:grayscale" in domains else (domains[1:] or [None])[0]
    return (domains[0] if domains else None), b


def divergence(cfg: UIConfig, choices: list[str] | None, data: str | None, domain_a: str | None,
               domain_b: str | None, limit: int = 200,
               on_progress: Callable[[int, int, str], None] | None = None) -> list[Divergence]:
    """IBN-Net feature divergence by depth (``classify.analysis.feature_divergence``) between two
    domains of an offered dataset, one result per chosen classifier."""
    data = _offered_data(cfg, data)
    if not choices:
        raise ValueError("pick at least one classifier")
    offered = divergence_domains(cfg, data)
    for d in (domain_a, domain_b):
        if d not in offered:
            raise ValueError(f"pick both domains from the list (got {d!r})")
    if domain_a == domain_b:
        raise ValueError("pick two different domains: a domain has no divergence from itself")
    try:
        limit = int(limit)
    except (TypeError, ValueError):
        raise ValueError(f"images per domain must be a whole number, got {limit!r}") from None
    if not 2 <= limit <= 5000:
        raise ValueError(f"images per domain must be between 2 and 5000, got {limit}")
    dev = device_of(cfg)
    sets_for: dict[tuple, dict] = {}  # models with the same input size and classes share images
    out = []
    for i, choice in enumerate(choices):
        if on_progress:
            on_progress(i, len(choices), choice)
        clf = load_classifier(cfg, choice)
        key = (clf.image_size, tuple(clf.class_names))
        if key not in sets_for:
            sets_for[key] = clf_analysis.domain_sets(clf, data, [domain_a, domain_b], limit,
                                                         dev)
        sets = sets_for[key]
        d = clf_analysis.feature_divergence(clf, sets[domain_a], sets[domain_b],
                                                (domain_a, domain_b), dev)
        d.model = choice.removeprefix(TRAINED_PREFIX)
        out.append(d)
    return out


def layer_at(div: Divergence, depth: float) -> int:
    """The probed layer at ``depth`` (0 = the stem, 1 = the last block) of one model."""
    return int(min(max(float(depth or 0), 0.0), 1.0) * (len(div.layers) - 1) + 0.5)  # half up


def divergence_figure(divs: list[Divergence], depth: float = 0.0):
    """Divergence by depth, one panel per model, the chosen layer marked."""
    fig = clf_analysis.divergence_figure(divs)
    for ax, d in zip(fig.axes, divs):
        ax.axvline(layer_at(d, depth), color="0.3", lw=6, alpha=0.15, zorder=0)
    return fig


MEASURES = (("total", "D(μ) (IBN-Net)"), ("removed_std", "D(σ)"), ("kept", "D after IN (kept)"))


def divergence_layer_chart(divs: list[Divergence], depth: float = 0.0):
    """The chosen layer, models side by side: the three measures as bars (log scale)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3.0 + 2.4 * len(divs), 3.2))
    width = 0.8 / len(MEASURES)
    for j, (field, label) in enumerate(MEASURES):
        xs = [i + (j - 1) * width for i in range(len(divs))]
        vals = [max(getattr(d, field)[layer_at(d, depth)], 1e-6) for d in divs]
        bars = ax.bar(xs, vals, width, label=label)
        ax.bar_label(bars, [f"{v:.3g}" for v in vals], fontsize=7)
    ax.set_xticks(range(len(divs)),
                  [f"{d.model}\n{d.layers[layer_at(d, depth)]}" for d in divs], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("symmetric KL", fontsize=8)
    ax.set_title(f"{divs[0].domains[0]} vs {divs[0].domains[1]} at layer depth "
                 f"{float(depth):.2f}", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.22), ncol=3,
              frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    return fig


def divergence_table(divs: list[Divergence], depth: float = 0.0) -> str:
    """The chosen layer's numbers, one row per model."""
    rows = ["| model | layer | D(μ): removed by IN | D(μ) median | D(σ): removed by IN | "
            "D after IN: kept |", "|---|---|---:|---:|---:|---:|"]
    for d in divs:
        i = layer_at(d, depth)
        rows.append(f"| {d.model} | {d.layers[i]} ({i + 1}/{len(d.layers)}) | {d.total[i]:.4f} | "
                    f"{d.total_median[i]:.4f} | {d.removed_std[i]:.4f} | {d.kept[i]:.4f} |")
    return "\n".join(rows)


# --------------------------------------------------------------------------- about

def report_choices(cfg: UIConfig) -> list[tuple[str, str]]:
    """The reproductions with a written report in ``cfg.reports_dir``, as (label, name)."""
    from experiments.reproduce import list_reproductions

    return [(f"{name}: {summary}", name) for name, summary in list_reproductions().items()
            if (cfg.reports_dir / name / "README.md").is_file()]


def reports_missing_markdown(cfg: UIConfig) -> str:
    """The reproductions without a report yet, with the command that writes each."""
    from experiments.reproduce import list_reproductions

    have = {n for _, n in report_choices(cfg)}
    missing = [n for n in list_reproductions() if n not in have]
    if not missing:
        return ""
    return ("Not written yet (run on the command line; `--budget cpu` takes CPU-hours, "
            "`--budget full` wants a GPU): "
            + ", ".join(f"`normlab reproduce {n} --budget cpu`" for n in missing) + ".")


_FIGURE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")


FILE_ROUTE = "gradio_api/file="  # how gradio serves an allowed file (relative to the page)


def report_view(cfg: UIConfig, name: str | None) -> tuple[str, list[tuple[str, str]]]:
    """A report's Markdown with each figure inline, where the text puts it (served from the
    reports folder, which ``launch`` allows), and the figures' (PNG path, caption) pairs in the
    report's order. Only a listed report is read, and only figures inside its own folder are
    shown."""
    if name not in {n for _, n in report_choices(cfg)}:
        raise ValueError("pick one of the listed reports")
    folder = (cfg.reports_dir / name).resolve()
    figures: list[tuple[str, str]] = []

    def place(m: re.Match) -> str:
        caption, ref = m.group(1), m.group(2)
        f = (folder / ref).resolve()
        if f.parent != folder or not f.is_file():
            return f"*(figure not found: {caption})*"
        figures.append((str(f), caption))
        return f"![{caption}]({FILE_ROUTE}{f.as_posix()})"

    return _FIGURE.sub(place, (folder / "README.md").read_text(encoding="utf-8")), figures


def _arxiv(ref: str) -> str:
    """``… — arXiv:1234.5678`` with the identifier turned into a link."""
    return re.sub(r"arXiv:(\d{4}\.\d{4,5})", r"[arXiv:\1](https://arxiv.org/abs/\1)", ref)


def shipped_models_markdown() -> str:
    """A table of the shipped models and their figures, from ``weights/manifest.json``."""
    import weights

    rows = ["| model | kind | norm | trained on | result |", "|---|---|---|---|---|"]
    for name, e in sorted(weights.manifest().items()):
        if e.get("kind") == "decoder":  # inverts the VGG encoder for `stylize run --style-image`
            trained = f"photos (reconstruction, {e.get('steps', '?')} steps)"
            psnr = e.get("heldout_psnr")
            result = f"held-out PSNR {psnr:.1f} dB" if isinstance(psnr, (int, float)) else ""
            rows.append(f"| `{name}` | decoder ({e.get('level', '?')}) | – | {trained} | {result} |")
            continue
        if e.get("kind") == "classify":
            trained = f"{e.get('dataset', '?')}, {e.get('epochs', '?')} epochs"
            result = (f"top-1 {e['accuracy']:.1f} % on {e.get('test_images', '?')} test images"
                      if isinstance(e.get("accuracy"), (int, float)) else "")
        else:
            styles = e.get("styles") or ([e["style"]] if e.get("style") else [])
            trained = (f"{len(styles)} styles ({', '.join(styles)})" if len(styles) > 1 else
                       f"style {styles[0] if styles else 'not recorded'}")
            if e.get("steps"):
                trained += f", {e['steps']} steps"
            losses = e.get("final_losses") or {}
            result = " · ".join(f"{k} {v:.3g}" for k, v in losses.items()
                                if isinstance(v, (int, float)))
            by_style = e.get("final_losses_mean_last_200_steps_by_style") or {}
            if not result and by_style:
                result = "style loss " + ", ".join(
                    f"{s} {v['style_loss']:.3g}" for s, v in by_style.items()
                    if isinstance(v, dict) and isinstance(v.get("style_loss"), (int, float)))
        rows.append(f"| `{name}` | {e.get('kind', '?')} | {e.get('norm', '?')} | {trained} | "
                    f"{result} |")
    return "\n".join(rows) if len(rows) > 2 else "No models are shipped in this build."


def about_markdown() -> str:
    """What each norm is, with a link to its paper, the networks, and the shipped models."""
    parts = ["## The normalisation layers", ""]
    for spec in norms.CATALOG.values():
        parts.append(f"**{spec.name}** — {spec.description}  ")
        parts.append(_arxiv(spec.paper))
        parts.append("")
    parts += [
        "## The networks",
        "- Style transfer: " + _arxiv("Johnson, Alahi & Fei-Fei, *Perceptual Losses for Real-Time "
                                      "Style Transfer and Super-Resolution*, ECCV 2016 — "
                                      "arXiv:1603.08155") + " (layout of pytorch/examples' "
        "fast_neural_style).",
        "- Classification: " + _arxiv("He, Zhang, Ren & Sun, *Deep Residual Learning for Image "
                                      "Recognition*, CVPR 2016 — arXiv:1512.03385") + " (CIFAR "
        "ResNets), and IBN-Net's ResNet/ResNeXt/DenseNet variants.",
        "",
        "## Shipped models",
        shipped_models_markdown(),
        "",
        "Everything here calls the same library functions as the `normlab` command line.",
    ]
    return "\n".join(parts)
