"""The Gradio Blocks app: one builder per tab over ``ui.handlers`` / ``ui.training``.

Only this module (and ``cli.ui`` lazily) imports gradio. Each ``_..._tab(cfg)`` builds one tab,
wires its own events and returns the components other tabs need (the model dropdowns that a
finished training refreshes).
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import logging
import threading
from types import SimpleNamespace

import gradio as gr
import pandas as pd

import norms
from stylize.arbitrary import METHODS as PAINTING_METHODS

from . import handlers as H
from . import training as T
from .config import UIConfig

log = logging.getLogger("normlab.ui")

CSS = """
.nl-status { min-height: 2.2em; }
.nl-table th, .nl-table td:first-child { white-space: nowrap; }
.nl-pixelated img { image-rendering: pixelated; }
.nl-report img { width: 100%; max-width: 900px; height: auto; display: block; }
#nl_banner:empty { display: none; }
.nl-card { padding: 10px 16px; min-height: 200px; border-radius: var(--block-radius);
           background: var(--block-background-fill); }
.nl-card .nl-big { font-size: 2.2em; font-weight: 600; }
/* style thumbnails: the whole caption, wrapped, not "candy · fou…" */
#st_gallery .caption-label { white-space: normal; overflow: visible; text-overflow: clip;
    overflow-wrap: anywhere; max-width: calc(100% - 6px); font-size: var(--text-xs);
    line-height: 1.15; text-align: center; padding: 2px 4px; }
/* a phone: the main tabs wrap onto a second row (no "…" menu), tighter */
@media (max-width: 640px) {
  #nl_tabs > .tab-wrapper [role=tablist] button { padding: 4px 8px; font-size: var(--text-sm); }
  /* every style thumbnail in view, 3 a row, not a row that scrolls sideways off the screen */
  #st_gallery, #st_gallery .grid-wrap { height: auto !important; max-height: none !important;
                                        overflow: visible !important; }
  #st_gallery .grid-container { grid-template-columns: repeat(3, minmax(0, 1fr)) !important;
                                grid-template-rows: none !important; }
}
footer { display: none !important; }
"""

INTRO = ("**normlab** — normalization layers (BN, IN, BN+IN, BIN, IBN) in style-transfer and "
         "classification CNNs. Every button calls the same library functions as the `normlab` "
         "command line.")

# runs in the browser before the painting buttons' handlers (which get its return value as
# their inputs): the result box, and its progress, are at the top of the tab
SHOW_RESULT = ("(...args) => { document.querySelector('#st_out')?.scrollIntoView("
               "{behavior: 'smooth', block: 'start'}); return args; }")

NOT_AN_IMAGE = "the uploaded file is not an image this server can read (JPEG, PNG, WebP, …)"


def guard(fn):
    """Turn library errors into ``gr.Error`` pop-ups with one line and no server paths (never a
    stack trace in the browser); unexpected errors are logged with their traceback on the
    server."""

    def convert(exc: BaseException) -> gr.Error:
        if isinstance(exc, gr.Error):
            return exc
        if isinstance(exc, (ValueError, FileNotFoundError, PermissionError)):
            return gr.Error(H.public_message(exc), print_exception=False)
        log.exception("handler %s failed", getattr(fn, "__name__", fn))
        return gr.Error(f"internal error ({type(exc).__name__}): {H.public_message(exc)}",
                        print_exception=False)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - shown to the user as one line
                raise convert(exc) from None
        return gen

    @functools.wraps(fn)
    def call(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - shown to the user as one line
            raise convert(exc) from None
    return call


def image_input(label: str, elem_id: str, **kw) -> gr.Image:
    """An image upload that hands the handler a file path (decoded by ``engine.images``: 16-bit,
    CMYK, EXIF), and answers a non-image file with one clean message instead of gradio's
    "Could not preprocess input component …" with a server temp path."""
    comp = gr.Image(label=label, type="filepath", sources=["upload", "clipboard"],
                    elem_id=elem_id, **kw)
    original = comp.preprocess

    def preprocess(payload):
        try:
            return original(payload)
        except gr.Error:
            raise
        except Exception:  # noqa: BLE001 - PIL raises many types for a non-image
            raise gr.Error(NOT_AN_IMAGE, print_exception=False) from None

    comp.preprocess = preprocess
    return comp


def _frame(rows: list[dict], series: str, max_points: int = 600) -> pd.DataFrame:
    """One series of plot rows as a typed frame (untyped columns make the plot's axes nominal),
    thinned to at most ~``max_points`` points so long runs stay cheap to redraw."""
    rows = [r for r in list(rows) if r["series"] == series]
    stride = -(-len(rows) // max_points)
    rows = rows[::-1][::stride][::-1] if stride > 1 else rows  # always keep the latest point
    return pd.DataFrame({"x": pd.Series([r["x"] for r in rows], dtype="float64"),
                         "value": pd.Series([r["value"] for r in rows], dtype="float64"),
                         "series": pd.Series([r["series"] for r in rows], dtype="str")})


def _prefer(options: list, wanted: str) -> str | None:
    """``wanted`` (or the option whose last path part is ``wanted``) if offered, else the first.
    Options are values or (label, value) pairs."""
    values = [o[1] if isinstance(o, tuple) else o for o in options]
    for v in values:
        if v == wanted or v.rstrip("/").rsplit("/", 1)[-1] == wanted:
            return v
    return values[0] if values else None


class Curve(SimpleNamespace):
    """A live training curve and the number card that stands in for it while it has one point
    (a line through one point draws nothing: the plot would be an empty frame)."""


def _plot(title: str, x_title: str, y_title: str, elem_id: str, unit: str = "") -> Curve:
    """A live training curve. One series per plot and no initial value: the browser fixes a
    plot's colour domain at its first data, so series that appear later would not be drawn."""
    plot = gr.LinePlot(None, x="x", y="value", title=title, x_title=x_title, y_title=y_title,
                       height=200, elem_id=elem_id)
    card = gr.Markdown(visible=False, elem_id=f"{elem_id}_card", elem_classes="nl-card")
    return Curve(plot=plot, card=card, title=title, x_title=x_title, unit=unit)


def curve_updates(curve: Curve, frame: pd.DataFrame) -> tuple:
    """The plot and card updates for ``frame``: with exactly one point the card shows its value
    in place of the plot; otherwise the plot (empty before the first point)."""
    if len(frame) == 1:
        x, v = float(frame["x"].iloc[0]), float(frame["value"].iloc[0])
        value = f"{v:.1f} {curve.unit}".strip() if curve.unit else f"{v:.4g}"
        text = (f"**{curve.title}**\n\n<span class='nl-big'>{value}</span> at {curve.x_title} "
                f"{x:g}\n\n(one point so far: a curve needs two)")
        return gr.update(value=frame, visible=False), gr.update(value=text, visible=True)
    return gr.update(value=frame, visible=True), gr.update(visible=False)


def _first(choices: list[tuple[str, str]]) -> str | None:
    return choices[0][1] if choices else None


def _dropdown_update(choices, value=None, multiselect=False):
    values = [v for _, v in choices]
    if multiselect:
        keep = [v for v in (value or []) if v in values]
        return gr.update(choices=choices, value=keep or values[:3])
    return gr.update(choices=choices, value=value if value in values else _first(choices))


def _strength_slider(shift: str | None) -> gr.Slider:
    """A strength slider in the shift's own units (classify.SHIFTS: e.g. RGB+50, contrast ×1.5)."""
    try:
        lo, hi, default = H.shift_range(shift)
    except ValueError:
        lo, hi, default = 0.0, 1.0, 1.0
    return gr.Slider(lo, hi, value=default, step=(hi - lo) / 100, label="Strength (shift's units)")


def _strength_for(shift):
    try:
        lo, hi, default = H.shift_range(shift)
    except ValueError:
        return gr.skip()
    return gr.update(minimum=lo, maximum=hi, value=default, step=(hi - lo) / 100)


def _shift_dropdown(shifts: list[str]) -> gr.Dropdown:
    """Only the offered shifts: a typed value (e.g. ``style:/some/path``) is refused by the
    component, and by ``handlers.check_shift`` for API clients."""
    return gr.Dropdown(shifts, value=_prefer(shifts, "brightness"), label="Shift",
                       allow_custom_value=False)


def _sample_images() -> list[list[str]]:
    """The bundled sample photos (weights/samples), as gr.Examples rows."""
    from weights import SAMPLES_DIR

    return [[str(p)] for p in sorted(SAMPLES_DIR.glob("*"))
            if p.suffix.lower() in {".jpg", ".jpeg", ".png"}][:8]


def _arch_choices() -> list[str]:
    """Architectures for the training tab, the small CIFAR ResNets first."""
    import classify

    names = list(classify.list_models())
    cifar = [n for n in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110") if n in names]
    return cifar + [n for n in names if n not in cifar]


def _clear():
    """Event: reset one output (and any stale Error badge on it) when its input changes."""
    return None


class SessionStops:
    """One stop flag per browser session, for the Stop buttons: a running stylize or video checks
    it between tiles / frame batches (gradio's ``cancels`` alone leaves the worker running)."""

    def __init__(self) -> None:
        self._flags: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def begin(self, request: gr.Request | None) -> threading.Event:
        """A cleared flag for this session's new run."""
        key = getattr(request, "session_hash", None) or "-"
        with self._lock:
            flag = self._flags.setdefault(key, threading.Event())
        flag.clear()
        return flag

    def stop(self, request: gr.Request) -> None:
        key = getattr(request, "session_hash", None) or "-"
        with self._lock:
            flag = self._flags.get(key)
        if flag is not None:
            flag.set()
        gr.Info("Stopped.")


STOPS = SessionStops()


# =========================================================================== tabs

def _stylize_tab(cfg: UIConfig) -> SimpleNamespace:
    """Photo → style thumbnails → result beside the photo (stacked on a phone); the model, blend,
    gate and size controls below, then compare, webcam and video."""
    style_choices = H.model_choices(cfg, "stylize")
    gallery = H.style_gallery(cfg)
    samples = _sample_images()
    start_model = H.default_style_model(style_choices)
    # the Style/Blend boxes are rendered from the start for a multi-style start model: a hidden
    # gradio component is absent from the page until the load-time info call shows it, which
    # left a window where an early upload or pick found no Style box at all
    start_styles = H.shipped_styles(start_model)
    with gr.Tab("Stylize", id="stylize"):
        with gr.Row(equal_height=False):
            with gr.Column(min_width=300):
                st_in = image_input("Your photo", "st_in", height=300)
            with gr.Column(min_width=300):
                st_out = gr.Image(label="Result", type="filepath", format="png",
                                  interactive=False, buttons=["download", "fullscreen"],
                                  elem_id="st_out", height=300)
                with gr.Row():
                    st_run = gr.Button("Stylize", variant="primary", elem_id="st_run", scale=3)
                    st_stop = gr.Button("Stop", variant="stop", elem_id="st_stop", scale=1,
                                        min_width=60)
        st_gallery = gr.Gallery([(g[0], g[1]) for g in gallery], label="Pick a style",
                                columns=8, rows=1, height=180, allow_preview=False,
                                fit_columns=False,
                                object_fit="cover", elem_id="st_gallery", buttons=[],
                                interactive=False,
                                selected_index=_gallery_index(gallery, start_model))
        st_info = gr.Markdown(elem_classes="nl-status", elem_id="st_info")
        if samples:
            gr.Examples(samples, inputs=st_in, label="Or try a sample photo")
        with gr.Accordion("Any painting: upload your own style image", open=False,
                          elem_id="st_any_painting"):
            gr.Markdown("Any image as the style, no training: the photo's features take the "
                        "painting's statistics (WCT: channel covariance, Li et al. 2017; AdaIN: "
                        "mean and spread, Huang & Belongie 2017) and shipped decoders turn them "
                        "back into a picture. **Optimise** instead refines the image itself "
                        "(Gatys et al. 2016): slow (minutes), the most faithful.",
                        elem_id="st_any_note")
            with gr.Row():
                st_painting = image_input("Painting", "st_painting", height=200)
                with gr.Column():
                    st_method = gr.Radio(list(PAINTING_METHODS), value=PAINTING_METHODS[0],
                                         label="Method",
                                         elem_id="st_method")
                    st_alpha = gr.Slider(0, 1, value=1, step=0.05, label="Style strength",
                                         elem_id="st_alpha")
                    st_any_size = gr.Slider(256, 1024, value=512, step=64, elem_id="st_any_size",
                                            label="Processing size (longest side, px)")
                    st_refine = gr.Slider(0, 100, value=0, step=10, elem_id="st_refine",
                                          label="Refine: optimiser iterations after the one "
                                                "pass (more of the painting's marks; seconds "
                                                "each on a CPU)")
            with gr.Row():
                st_any_run = gr.Button("Stylize with this painting", variant="primary",
                                       elem_id="st_any_run")
                st_opt_run = gr.Button("Optimise (slow, best)", elem_id="st_opt_run")
                st_opt_iters = gr.Textbox("100,60,30", label="Optimiser iterations per scale "
                                          "(1/4, 1/2, full)", elem_id="st_opt_iters")
        with gr.Accordion("Model, blend, strength and size", open=False, elem_id="st_settings"):
            with gr.Row():
                st_model = gr.Dropdown(style_choices, value=start_model,
                                       label="Style model", allow_custom_value=True,
                                       elem_id="st_model")
                st_style = gr.Dropdown(start_styles, value=(start_styles or [None])[0],
                                       visible=bool(start_styles), allow_custom_value=True,
                                       elem_id="st_style", label="Style (this model holds several)",
                                       info="Pick one, or type a blend such as "
                                            "candy:0.5,mosaic:0.5")
                st_blend = gr.Dropdown([H.NO_BLEND] + start_styles if start_styles else [],
                                       value=H.NO_BLEND if start_styles else None,
                                       visible=bool(start_styles), elem_id="st_blend",
                                       label="Blend with",
                                       info="A second style mixed in (Dumoulin et al.: a convex "
                                            "combination of the norm parameters)")
                st_mix = gr.Slider(0, 1, value=0.5, step=0.05, visible=bool(start_styles),
                                   elem_id="st_mix",
                                   label="Blend weight (share of the second style)")
            with gr.Row():
                st_strength = gr.Slider(0, 1, value=1, step=0.05, elem_id="st_strength",
                                        label="Strength (0 = the input)")
                st_max = gr.Slider(0, 2048, value=1024, step=64, elem_id="st_max",
                                   label="Processing size (longest side, px; 0 = full size)",
                                   info="The network runs at this size; large images are "
                                        "processed in tiles within the server's memory budget.")
                st_outsize = gr.Radio(list(H.OUTPUT_SIZES), value=H.OUTPUT_SIZES[0],
                                      label="Output size", elem_id="st_outsize")
                st_color = gr.Checkbox(label="Preserve colour (transfer luminance only)")
            with gr.Row(visible=False) as st_gate_row:
                st_gate_on = gr.Checkbox(label="Override learned gates ρ", scale=1,
                                         elem_id="st_gate_on")
                st_gate = gr.Slider(-1, 1, value=0, step=0.05, scale=3, interactive=False,
                                    elem_id="st_gate",
                                    label="Gate: −1 = all IN · 0 = learned · +1 = all BN",
                                    info="Tick “Override learned gates ρ” to use this slider.")
            st_upload = gr.File(label="Your own style model: a .safetensors from `normlab "
                                "stylize train` or a pytorch/examples .pth (replaces the model "
                                "above)", file_types=[".safetensors", ".pth"], height=100,
                                elem_id="st_upload")
        with gr.Accordion("Compare norms: the same image through several models", open=False):
            with gr.Row():
                cmp_models = gr.Dropdown(style_choices, elem_id="cmp_models",
                                         value=H.distinct_norm_choices(cfg, "stylize"),
                                         multiselect=True, label="Models (one per norm first)",
                                         info="A model with several styles shows its first; "
                                              "the caption under the grid names each cell.",
                                         allow_custom_value=True, scale=3)
                cmp_max = gr.Slider(128, 1024, value=384, step=64,
                                    label="Size of each cell (longest side, px)")
            cmp_run = gr.Button("Compare")
            cmp_out = gr.Image(label="Comparison (each cell: model · style · norm)", type="pil",
                               format="png", interactive=False, elem_id="cmp_out")
            cmp_caption = gr.Markdown(elem_id="cmp_caption")
            cmp_labels = gr.State([])
        with gr.Accordion("Webcam (live)", open=False):
            with gr.Row():
                cam_in = gr.Image(label="Webcam", sources=["webcam"], streaming=True,
                                  type="pil", image_mode="RGB")
                cam_out = gr.Image(label="Stylized", type="pil", interactive=False)
            cam_smooth = gr.Checkbox(
                label="Smooth webcam (temporal statistics)", elem_id="cam_smooth",
                info="Normalise each frame with a moving average of the statistics of the frames "
                     "before it (momentum 0.9), not its own: less flicker when things enter or "
                     "leave the picture. The average restarts with the model or the stream.")
            cam_state = gr.State(None)  # this session's stream (stylize.video.LiveStylizer)
        with gr.Accordion("Video", open=False):
            with gr.Row():
                with gr.Column():
                    vid_in = gr.Video(label="Input video", sources=["upload"], elem_id="vid_in",
                                      height=260)
                    with gr.Row():
                        vid_smooth = gr.Checkbox(
                            value=True, label="Smooth", elem_id="vid_smooth",
                            info="Average the normalization statistics over the frames: less "
                                 "flicker")
                        vid_max = gr.Slider(0, 1024, value=384, step=32, elem_id="vid_max",
                                            label="Processing size (longest side, px; 0 = full)")
                    with gr.Row():
                        vid_run = gr.Button("Stylize video", elem_id="vid_run", scale=3)
                        vid_stop = gr.Button("Stop", variant="stop", elem_id="vid_stop",
                                             scale=1, min_width=60)
                    gr.Markdown(f"Up to {cfg.max_video_frames} frames and "
                                f"{cfg.max_video_seconds:g} s; frame rate and audio are kept. "
                                "Uses the style, model and gate settings above.")
                with gr.Column():
                    vid_out = gr.Video(label="Stylized video", interactive=False,
                                       elem_id="vid_out", height=260)
                    vid_info = gr.Markdown(elem_classes="nl-status", elem_id="vid_info")

    inputs = [st_in, st_model, st_upload, st_strength, st_color, st_max, st_gate_on, st_gate,
              st_outsize, st_style, st_blend, st_mix]

    @guard
    def do_stylize(image, model, upload, strength, color, max_size, gate_on, gate,
                   output_size="input size", style=None, blend_with=None, blend_weight=0.5,
                   request: gr.Request = None, progress=gr.Progress()):
        stop = STOPS.begin(request)
        progress(0, desc="loading the model…")  # the bar shows from the first second

        def on_progress(done, total):
            if stop.is_set():
                raise ValueError(H.STOPPED)
            progress(done / max(total, 1), desc=f"stylizing: {done}/{total}")

        return H.stylize_file(cfg, image, model, upload, strength=strength,
                              preserve_color=color, max_size=max_size,
                              gate=gate if gate_on else None,
                              output_size=output_size or "input size", on_progress=on_progress,
                              style=style, blend_with=blend_with, blend_weight=blend_weight)

    run_event = st_run.click(do_stylize, inputs, st_out, api_name="stylize")

    def do_stylize_live(image, *rest):
        """Sliders and style picks re-render at once, but only when there is an image to show."""
        if image is None:
            return gr.skip()
        (model, upload, strength, color, max_size, gate_on, gate, output_size, style,
         blend_with, blend_weight) = rest
        return guard(H.stylize_file)(cfg, image, model, upload, strength=strength,
                                     preserve_color=color, max_size=max_size,
                                     gate=gate if gate_on else None,
                                     output_size=output_size or "input size", style=style,
                                     blend_with=blend_with, blend_weight=blend_weight)

    for slider in (st_gate, st_mix, st_strength):
        slider.release(do_stylize_live, inputs, st_out, api_visibility="private")
    for box in (st_gate_on, st_color):
        box.input(do_stylize_live, inputs, st_out, api_visibility="private")
    st_gate_on.change(lambda on: gr.update(interactive=bool(on)), st_gate_on, st_gate,
                      api_visibility="private")
    st_in.change(_clear, None, st_out, api_visibility="private")

    @guard
    def do_painting(image, painting, method, alpha, size, color, refine=0,
                    request: gr.Request = None, progress=gr.Progress()):
        stop = STOPS.begin(request)
        progress(0, desc="loading the encoder and decoders…")

        def on_progress(done, total):
            if stop.is_set():
                raise ValueError(H.STOPPED)
            progress(done / max(total, 1), desc=f"stylizing: level {done}/{total}")

        def on_refine(done, total):
            if stop.is_set():
                raise ValueError(H.STOPPED)
            progress(done / max(total, 1), desc=f"refining: iteration {done}/{total}")

        out = H.stylize_painting(cfg, image, painting, method=method, alpha=alpha,
                                 max_size=size, preserve_color=color, on_progress=on_progress,
                                 refine=int(refine or 0), on_refine=on_refine)
        return H.save_result(cfg, out, image, painting, method)

    @guard
    def do_optimize(image, painting, size, iterations, request: gr.Request = None,
                    progress=gr.Progress()):
        stop = STOPS.begin(request)
        progress(0, desc="optimising…")
        out = H.optimize_painting(cfg, image, painting, size=size, iterations=iterations,
                                  on_progress=lambda d, t: progress(d / max(t, 1),
                                                                    desc=f"iteration {d}/{t}"),
                                  should_stop=stop.is_set)
        return H.save_result(cfg, out, image, painting, "optimized")

    any_event = st_any_run.click(do_painting, [st_in, st_painting, st_method, st_alpha,
                                               st_any_size, st_color, st_refine], st_out,
                                 api_name="stylize_painting", js=SHOW_RESULT)
    opt_event = st_opt_run.click(do_optimize, [st_in, st_painting, st_any_size, st_opt_iters],
                                 st_out, api_name="optimize_painting", js=SHOW_RESULT)
    st_stop.click(STOPS.stop, None, None, cancels=[run_event, any_event, opt_event],
                  api_visibility="private")

    def pick_style(evt: gr.SelectData):
        """A thumbnail sets the model and style (and drops an uploaded model)."""
        now = H.style_gallery(cfg)  # as shown since the page (re)loaded
        if evt.index is None or not 0 <= int(evt.index) < len(now):
            return gr.skip(), gr.skip(), gr.skip(), gr.skip()
        _, _, model, style = now[int(evt.index)]
        return model, gr.update(value=style) if style else gr.skip(), H.NO_BLEND, None

    st_gallery.select(pick_style, None, [st_model, st_style, st_blend, st_upload],
                      api_visibility="private").then(
        do_stylize_live, inputs, st_out, api_visibility="private")

    def do_info(model, upload, style=None):
        """Model facts, and which style/blend/gate controls it has. A bad upload is one line in
        the info box (no Error badges on the controls) and hides them."""
        try:
            text, gated = H.style_model_info(cfg, model, upload)
            styles = H.style_choices(cfg, model, upload)
        except ValueError as exc:
            gr.Warning(H.public_message(exc))
            hide = gr.update(visible=False)
            return (f"⚠ {H.public_message(exc)}", hide, hide, hide, hide,
                    gr.update(label="Style model"))
        keep = style if style in styles else (styles[0] if styles else None)
        label = (f"Style model — replaced by the uploaded {H.public_message(upload)}" if upload
                 else "Style model")
        return (text, gr.update(visible=gated),
                gr.update(choices=styles, value=keep, visible=bool(styles)),
                gr.update(choices=[H.NO_BLEND] + styles, value=H.NO_BLEND,
                          visible=bool(styles)),
                gr.update(visible=bool(styles)), gr.update(label=label))

    info_io = ([st_model, st_upload, st_style],
               [st_info, st_gate_row, st_style, st_blend, st_mix, st_model])
    for trig in (st_model.change, st_upload.change):
        trig(do_info, *info_io, api_visibility="private")

    def check_upload(image):
        """The size limit, said on upload (before any click)."""
        try:
            H.check_image_size(cfg, image)
        except ValueError as exc:
            gr.Warning(str(exc))
            return f"⚠ {exc}"
        return gr.skip()

    st_in.upload(check_upload, st_in, st_info, api_visibility="private")

    @guard
    def do_compare(image, models, max_size):
        return H.compare_cells(cfg, image, models, max_size)

    cmp_run.click(do_compare, [st_in, cmp_models, cmp_max], [cmp_out, cmp_labels],
                  api_name="compare").then(H.compare_caption, cmp_labels, cmp_caption,
                                           api_visibility="private")

    @guard
    def do_webcam(frame, model, strength, color, smooth=False, live=None, style=None,
                  blend_with=None, blend_weight=0.5):
        return H.webcam_frame(cfg, frame, model, strength, color, bool(smooth), live,
                              style=H.blend_spec(style, blend_with, blend_weight))

    cam_in.stream(do_webcam, [cam_in, st_model, st_strength, st_color, cam_smooth, cam_state,
                              st_style, st_blend, st_mix],
                  [cam_out, cam_state], stream_every=0.5, time_limit=120, concurrency_limit=1,
                  api_visibility="private")
    # a new model, the toggle or a cleared camera start a new stream (and so does a pause, see
    # handlers.WEBCAM_RESET_AFTER_S: a restarted camera)
    for trig in (st_model.change, cam_smooth.change, cam_in.clear):
        trig(lambda: None, None, cam_state, api_visibility="private")

    @guard
    def do_video(video, model, upload, smooth, max_size, gate_on, gate, style=None,
                 blend_with=None, blend_weight=0.5, request: gr.Request = None,
                 progress=gr.Progress()):
        stop = STOPS.begin(request)
        progress(0, desc="reading the video…")
        return H.stylize_video(cfg, video, model, upload, bool(smooth), max_size,
                               gate if gate_on else None,
                               on_progress=lambda done, total: progress(
                                   (done, total), desc="stylizing video", unit="frames"),
                               style=H.blend_spec(style, blend_with, blend_weight),
                               should_stop=stop.is_set)

    vid_event = vid_run.click(do_video, [vid_in, st_model, st_upload, vid_smooth, vid_max,
                                         st_gate_on, st_gate, st_style, st_blend, st_mix],
                              [vid_out, vid_info], api_name="stylize_video",
                              concurrency_limit=1, concurrency_id="stylize_video")
    vid_stop.click(STOPS.stop, None, None, cancels=[vid_event], api_visibility="private")
    vid_in.change(lambda: (None, None), None, [vid_out, vid_info], api_visibility="private")
    def gallery_now(model):
        """Models trained since the server started get their thumbnails on a (re)load."""
        now = H.style_gallery(cfg)
        return gr.update(value=[(g[0], g[1]) for g in now],
                         selected_index=_gallery_index(now, model))

    return SimpleNamespace(model=st_model, compare_models=cmp_models,
                           info=(do_info, *info_io), gallery=(gallery_now, st_model, st_gallery))


def _gallery_index(gallery: list, model: str | None) -> int | None:
    """The thumbnail of the model (and its first style) the tab opens on."""
    return next((i for i, g in enumerate(gallery) if g[2] == model), None)


def _is_domains(spec: str | None) -> bool:
    """Whether a dataset choice is a folder of domains (PACS): its domain fields are shown."""
    return bool(spec) and spec.startswith("pacs:")


def _number(value, label: str, minimum, maximum, elem_id: str, precision: int | None = 0
            ) -> gr.Number:
    """A number box whose range is checked when Start is pressed (``_check_numbers``), so the
    message names the field ("Epochs must be at least 1, got 0") and shows in the status line,
    not gradio's bare "Value 0 is less than minimum value 1." as an Error badge."""
    comp = gr.Number(value, precision=precision, label=label, elem_id=elem_id)
    comp.nl_bounds = (label, minimum, maximum)
    return comp


def _check_numbers(components: list, values: list) -> None:
    """``ValueError`` naming the first number box whose value is missing or out of its range."""
    for comp, v in zip(components, values):
        bounds = getattr(comp, "nl_bounds", None)
        if bounds is None:
            continue
        label, lo, hi = bounds
        if v is None:
            raise ValueError(f"{label} is empty")
        if lo is not None and v < lo:
            raise ValueError(f"{label} must be at least {lo:g}, got {v:g}")
        if hi is not None and v > hi:
            raise ValueError(f"{label} must be at most {hi:g}, got {v:g}")


def _train_status(kind: str) -> gr.Markdown:
    return gr.Markdown(elem_classes="nl-status", elem_id=f"{kind}_status")


def _train_style_tab(cfg: UIConfig) -> SimpleNamespace:
    norm_names = list(norms.NORM_NAMES)
    content_opts = T.content_dirs(cfg)
    with gr.Tab("Train a style", id="train_style"):
        gr.Markdown("Train a feed-forward style network (Johnson et al. 2016) on a content "
                    "folder the operator allowed. The run belongs to the server: reloading or "
                    "closing this page does not stop it, and the page shows it again when "
                    "reopened. One training runs at a time. The finished model appears in the "
                    "Stylize tab at once.")
        with gr.Row():
            with gr.Column():
                style = image_input("Style image", "ts_style")
                content = gr.Dropdown(content_opts, value=_prefer(content_opts, "content"),
                                      label="Content photos (by folder, with image counts)",
                                      elem_id="ts_content")
                with gr.Row():
                    norm = gr.Dropdown(norm_names, value="bin" if "bin" in norm_names
                                       else norm_names[0], label="Norm", elem_id="ts_norm")
                    size = gr.Slider(64, 512, value=T.STYLE_DEFAULTS["image_size"], step=32,
                                     label="Image size", elem_id="ts_size")
                with gr.Row():
                    steps = _number(T.STYLE_DEFAULTS["steps"], "Steps", 1, 100000, "ts_steps")
                    batch = _number(T.STYLE_DEFAULTS["batch_size"], "Batch size", 1, 64,
                                    "ts_batch")
                name = gr.Textbox(label="Model name (optional)", elem_id="ts_name")
                estimate = gr.Markdown(T.style_estimate(T.STYLE_DEFAULTS["image_size"],
                                                        T.STYLE_DEFAULTS["steps"],
                                                        T.STYLE_DEFAULTS["batch_size"]),
                                       elem_id="ts_estimate")
                with gr.Row():
                    start = gr.Button("Start training", variant="primary", elem_id="ts_start")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="ts_cancel")
                status = _train_status("ts")
            with gr.Column():
                content_plot = _plot("Content loss", "step", "loss", "ts_content_plot")
                style_plot = _plot("Style loss", "step", "loss", "ts_style_plot")
                preview = gr.Image(label="Preview", type="pil", interactive=False, height=256)
    for comp in (size, steps, batch):
        comp.change(T.style_estimate, [size, steps, batch], estimate, api_visibility="private")
    return SimpleNamespace(inputs=[style, content, norm, size, steps, batch, name], start=start,
                           cancel=cancel, status=status, plots=[content_plot, style_plot],
                           series=["content", "style"], extra=[preview])


def _classify_tab(cfg: UIConfig) -> SimpleNamespace:
    clf_choices = H.model_choices(cfg, "classify")
    shifts = H.shift_names()
    samples = _sample_images()
    with gr.Tab("Classify", id="classify"):
        note = H.classifier_note(cfg)
        if note:
            gr.Markdown(note, elem_id="cl_note")
        with gr.Row():
            with gr.Column():
                cl_in = image_input("Image", "cl_in", height=260,
                                    elem_classes="nl-pixelated")
                cl_model = gr.Dropdown(clf_choices, value=_first(clf_choices),
                                       label="Classifier", allow_custom_value=True)
                cl_topk = gr.Slider(1, 10, value=5, step=1, label="Top-k")
                cl_run = gr.Button("Classify", variant="primary", elem_id="cl_run")
                if samples:
                    gr.Examples(samples, inputs=cl_in, label="Sample photos")
            with gr.Column():
                cl_out = gr.Label(label="Prediction", elem_id="cl_out")
                cl_view = gr.Image(label="What the model sees (its input size, enlarged)",
                                   type="pil", interactive=False, height=180,
                                   elem_id="cl_view", elem_classes="nl-pixelated")
        gr.Markdown("### Shift explorer\nApply an appearance shift and see how models with "
                    "different norms change their minds (uses the image above).")
        with gr.Row():
            sx_models = gr.Dropdown(clf_choices, value=[v for _, v in clf_choices][:3],
                                    multiselect=True, label="Classifiers",
                                    allow_custom_value=True, scale=2)
            sx_shift = _shift_dropdown(shifts)
            sx_strength = _strength_slider(_prefer(shifts, "brightness"))
        sx_run = gr.Button("Compare under shift", elem_id="sx_run")
        with gr.Row():
            sx_img = gr.Image(label="Shifted image", type="pil", interactive=False, height=224,
                              elem_classes="nl-pixelated", scale=1)
            sx_chart = gr.Plot(label="Does each model keep its answer?", elem_id="sx_chart",
                               scale=2)
        sx_table = gr.Markdown(elem_classes="nl-table", elem_id="sx_table")

    @guard
    def do_classify(image, model, topk):
        return H.classify(cfg, image, model, topk)

    cl_run.click(do_classify, [cl_in, cl_model, cl_topk], cl_out, api_name="classify")

    @guard
    def do_view(image, model):
        if not image or not model:
            return None
        return H.classify_with_view(cfg, image, model, 1)[1]

    cl_run.click(do_view, [cl_in, cl_model], cl_view, api_visibility="private")
    cl_in.change(lambda: (None, None), None, [cl_out, cl_view], api_visibility="private")

    @guard
    def do_shift(image, models, shift, strength):
        shifted, rows = H.shift_explorer(cfg, image, models, shift, strength)
        return shifted, H.shift_chart(rows, shift), H.shift_table(rows)

    sx_run.click(do_shift, [cl_in, sx_models, sx_shift, sx_strength],
                 [sx_img, sx_chart, sx_table], api_name="shift_explorer")
    sx_shift.change(_strength_for, sx_shift, sx_strength, api_visibility="private")
    return SimpleNamespace(model=cl_model, shift_models=sx_models)


def _train_classifier_tab(cfg: UIConfig) -> SimpleNamespace:
    norm_names = list(norms.NORM_NAMES)
    archs = _arch_choices()
    data_opts = T.dataset_dirs(cfg)
    with gr.Tab("Train a classifier", id="train_classifier"):
        gr.Markdown("Train a CIFAR-style ResNet (or any registered architecture) with a chosen "
                    "norm on a dataset folder the operator allowed (ImageFolder `train/` + "
                    "`test/` trees, or a folder of domains like PACS, found at any depth). The "
                    "run belongs to the server: a reloaded page shows it again. One training "
                    "at a time; the model appears in the Classify tab at once.")
        with gr.Row():
            with gr.Column():
                with gr.Row():
                    arch = gr.Dropdown(archs, value=archs[0] if archs else None,
                                       label="Architecture", elem_id="tc_arch")
                    norm = gr.Dropdown(norm_names, value="bin" if "bin" in norm_names
                                       else norm_names[0], label="Norm", elem_id="tc_norm")
                data = gr.Dropdown(data_opts, value=_first(data_opts),
                                   label="Dataset (by name, with image counts)", elem_id="tc_data")
                with gr.Row():
                    epochs = _number(T.CLASSIFY_DEFAULTS["epochs"], "Epochs", 1, 500,
                                     "tc_epochs")
                    batch = _number(T.CLASSIFY_DEFAULTS["batch_size"], "Batch size", 2, 1024,
                                    "tc_batch")
                    lr = _number(T.CLASSIFY_DEFAULTS["lr"], "Learning rate", 1e-5, 1.0, "tc_lr",
                                 precision=None)
                    subset = _number(T.CLASSIFY_DEFAULTS["train_subset"],
                                     "Training images (0 = all)", 0, None, "tc_subset")
                    name = gr.Textbox(label="Model name (optional)", elem_id="tc_name")
                pacs = _is_domains(_first(data_opts))
                with gr.Row(visible=pacs) as domain_row:
                    train_dom = gr.Textbox(label="Training domains (empty = the rest)",
                                           elem_id="tc_train_dom")
                    test_dom = gr.Textbox("sketch", label="Test domains", elem_id="tc_test_dom")
                estimate = gr.Markdown(T.classifier_estimate(
                    cfg, _first(data_opts), T.CLASSIFY_DEFAULTS["epochs"],
                    T.CLASSIFY_DEFAULTS["train_subset"]), elem_id="tc_estimate")
                with gr.Row():
                    start = gr.Button("Start training", variant="primary", elem_id="tc_start")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="tc_cancel")
                status = _train_status("tc")
            with gr.Column():
                loss_plot = _plot("Training loss", "epoch", "loss", "tc_loss_plot")
                acc_plot = _plot("Training accuracy", "epoch", "accuracy (%)", "tc_acc_plot",
                                 unit="%")
                test_plot = _plot("Test accuracy (end of each epoch)", "epoch", "accuracy (%)",
                                  "tc_test_plot", unit="%")
    for comp in (data, epochs, subset):
        comp.change(lambda d, e, s: T.classifier_estimate(cfg, d, e, s), [data, epochs, subset],
                    estimate, api_visibility="private")
    data.change(lambda d: gr.update(visible=_is_domains(d)), data, domain_row,
                api_visibility="private")
    return SimpleNamespace(inputs=[arch, norm, data, epochs, batch, lr, subset, train_dom,
                                   test_dom, name], start=start, cancel=cancel, status=status,
                           plots=[loss_plot, acc_plot, test_plot],
                           series=["train loss", "train acc", "test acc"], extra=[])


def _norms_lab_tab(cfg: UIConfig) -> SimpleNamespace:
    lab_choices = H.lab_choices(cfg)
    shifts = H.shift_names()
    with gr.Tab("Norms lab", id="norms_lab"):
        gr.Markdown("### Learned gates\nBIN learns, per channel, how much to behave like BN "
                    "(ρ = 1) or IN (ρ = 0). Histograms of ρ by depth (BIN paper, Fig. 2/6).")
        with gr.Row():
            lab_model = gr.Dropdown(lab_choices, value=_first(lab_choices), label="Model",
                                    allow_custom_value=True, scale=3)
            lab_run = gr.Button("Show gates", elem_id="lab_run")
        lab_plot = gr.Plot(label="ρ histograms")
        lab_table = gr.Markdown(elem_classes="nl-table")
        gr.Markdown("### Feature statistics: IN removes style\nPer-channel mean and standard "
                    "deviation of one norm layer's output (x axis: channel index), for an image "
                    "and its shifted copy. Under IN the two lines coincide (the shift is "
                    "normalised away); under BN they follow the shift; BIN sits in between. "
                    "**mean |Δ|** in each panel's title is the average over channels of the "
                    "absolute difference between the two lines: 0 means the layer removed the "
                    "shift entirely.")
        with gr.Row():
            fs_in = image_input("Image", "fs_in", height=224)
            fs_shifted = gr.Image(label="Shifted copy", type="pil", interactive=False, height=224)
        with gr.Row():
            fs_models = gr.Dropdown(lab_choices, value=[v for _, v in lab_choices][:3],
                                    multiselect=True, label="Models", allow_custom_value=True,
                                    scale=3)
            fs_depth = gr.Slider(0, 1, value=0, step=0.05,
                                 label="Layer depth (0 = first norm layer → 1 = last)", scale=2)
            fs_shift = _shift_dropdown(shifts)
            fs_strength = _strength_slider(_prefer(shifts, "brightness"))
        fs_run = gr.Button("Compute statistics", elem_id="fs_run")
        fs_plot = gr.Plot(label="Channel statistics", elem_id="fs_plot")
        dv = _divergence_panel(cfg)

    @guard
    def do_gates(model):
        return H.gate_histograms(cfg, model)

    lab_run.click(do_gates, lab_model, [lab_plot, lab_table], api_name="gates")

    @guard
    def do_stats(image, models, depth, shift, strength):
        shifted, stats = H.feature_stats(cfg, image, models, depth, shift, strength)
        return shifted, H.feature_figure(stats, shift)

    fs_run.click(do_stats, [fs_in, fs_models, fs_depth, fs_shift, fs_strength],
                 [fs_shifted, fs_plot], api_name="feature_stats")
    fs_shift.change(_strength_for, fs_shift, fs_strength, api_visibility="private")
    return SimpleNamespace(model=lab_model, models=fs_models, dv_models=dv.models)


def _domain_update(cfg: UIConfig, data: str | None):
    """The two domain boxes for a dataset: PACS's domains or the test set, and shifts."""
    try:
        doms = H.divergence_domains(cfg, data)
    except ValueError:
        return gr.update(choices=[], value=None), gr.update(choices=[], value=None)
    a, b = H.default_domains(doms)
    return gr.update(choices=doms, value=a), gr.update(choices=doms, value=b)


def _divergence_panel(cfg: UIConfig) -> SimpleNamespace:
    """IBN-Net's feature divergence between two domains, by depth (the CLI's ``classify
    divergence``): computed once per click, then the layer slider redraws from the kept result."""
    clf_choices = H.model_choices(cfg, "classify")
    data_opts = T.dataset_dirs(cfg)
    data0 = _prefer(data_opts, "cifar10")
    try:
        doms = H.divergence_domains(cfg, data0) if data0 else []
    except ValueError:
        doms = []
    a0, b0 = H.default_domains(doms)
    gr.Markdown("### Feature divergence between domains (IBN-Net, Pan et al. 2018, Sec. 3)\n"
                "How far apart two domains (photos vs sketches, or images vs their grayscale "
                "copies) sit in each layer: the symmetric KL between Gaussians fitted per channel "
                "over each domain's images. **D(μ)** (IBN-Net's measure) and **D(σ)** live in "
                "the instance statistics that IN removes; **D after IN** is what survives it. "
                "Pick the layer with the slider: the bar chart and table follow at once.",
                elem_id="dv_intro")
    with gr.Row():
        models = gr.Dropdown(clf_choices, value=H.distinct_norm_choices(cfg, "classify", 3),
                             multiselect=True, label="Classifiers (one per norm first)",
                             allow_custom_value=False, scale=3, elem_id="dv_models")
        data = gr.Dropdown(data_opts, value=data0, label="Dataset (by name, with image counts)",
                           scale=3, elem_id="dv_data")
    with gr.Row():
        dom_a = gr.Dropdown(doms, value=a0, label="Domain A", elem_id="dv_a")
        dom_b = gr.Dropdown(doms, value=b0, label="Domain B", elem_id="dv_b")
        limit = gr.Slider(20, 1000, value=200, step=20, label="Images per domain",
                          elem_id="dv_limit")
    run = gr.Button("Compute divergence", elem_id="dv_run")
    # the figures carry their own titles (a plot's label would sit on the first one)
    by_depth = gr.Plot(label="Divergence by depth", show_label=False, elem_id="dv_plot")
    depth = gr.Slider(0, 1, value=0, step=0.05, elem_id="dv_depth",
                      label="Layer depth (0 = stem → 1 = last block; shaded above)")
    at_layer = gr.Plot(label="At this layer", show_label=False, elem_id="dv_layer_plot")
    table = gr.Markdown(elem_classes="nl-table", elem_id="dv_table")
    kept = gr.State(None)  # this session's last result: the slider redraws without recomputing

    @guard
    def do_divergence(models, data, a, b, n, d, progress=gr.Progress()):
        progress(0, desc="decoding the images…")
        divs = H.divergence(cfg, models, data, a, b, n, on_progress=lambda i, t, m: progress(
            i / max(t, 1), desc=f"{m}: features of {a} and {b}"))
        return (H.divergence_figure(divs, d), H.divergence_layer_chart(divs, d),
                H.divergence_table(divs, d), divs)

    run.click(do_divergence, [models, data, dom_a, dom_b, limit, depth],
              [by_depth, at_layer, table, kept], api_name="divergence")

    def redraw(divs, d):
        if not divs:
            return gr.skip(), gr.skip(), gr.skip()
        return (H.divergence_figure(divs, d), H.divergence_layer_chart(divs, d),
                H.divergence_table(divs, d))

    depth.change(redraw, [kept, depth], [by_depth, at_layer, table], api_visibility="private",
                 trigger_mode="always_last")
    data.change(lambda d: _domain_update(cfg, d), data, [dom_a, dom_b], api_visibility="private")
    return SimpleNamespace(models=models)


def _reports_tab(cfg: UIConfig) -> SimpleNamespace:
    choices = H.report_choices(cfg)
    with gr.Tab("Reports", id="reports"):
        intro = gr.Markdown(elem_id="reports_intro")
        report = gr.Dropdown(choices, value=_first(choices), label="Report", elem_id="report")
        # figures inline, full width, where the text puts them
        text = gr.Markdown(elem_classes=["nl-table", "nl-report"], elem_id="report_text")

    @guard
    def show(name):
        return H.report_view(cfg, name)[0] if name else ""

    report.change(show, report, text, api_name="report")

    def on_load(current):
        """Reports written since the server started show up on a (re)load."""
        now = H.report_choices(cfg)
        value = current if current in {n for _, n in now} else _first(now)
        head = ("### The papers' findings, reproduced\nReports written by `normlab reproduce "
                "NAME` (tables as mean ± sd over seeds with n, a noise verdict for every gap, "
                "the exact commands and the wall time). " + H.reports_missing_markdown(cfg))
        return head, _dropdown_update(now, value), show(value)

    return SimpleNamespace(load=(on_load, report, [intro, report, text]))


def _about_tab(cfg: UIConfig) -> None:
    with gr.Tab("About", id="about"):
        gr.Markdown(H.about_markdown(), elem_classes="nl-table", elem_id="about")


# =========================================================================== training events

def visitor(request: gr.Request | None) -> T.Visitor:
    """Who sent ``request`` (``ui.training.Visitor``): its session, a digest of its address and
    user agent (a reloaded page is the same browser), and the user signed in with ``--auth``."""
    if request is None:
        return T.Visitor()
    headers = getattr(request, "headers", None) or {}
    host = getattr(getattr(request, "client", None), "host", "") or ""
    seen = "|".join([host, headers.get("x-forwarded-for", ""), headers.get("user-agent", "")])
    return T.Visitor(session=getattr(request, "session_hash", None) or "",
                     browser=hashlib.sha256(seen.encode()).hexdigest()[:24],
                     user=getattr(request, "username", None) or None)


def _wire_training(cfg: UIConfig, demo: gr.Blocks, tab: SimpleNamespace, job: T.Job,
                   other: T.Job, start_fn, dropdowns: list, refreshed, api: str) -> None:
    """Start (checks at once, then follows the server-side job), Cancel, and re-attach on page
    load (with the form showing what the run was started with). Following holds no worker slot:
    the job runs in its own server thread."""
    curves = [c for p in tab.plots for c in (p.plot, p.card)]
    outputs = [tab.status, *curves, *tab.extra, *dropdowns]

    def render(u: T.TrainUpdate, current: list) -> list:
        out = [u.status]
        for p, s in zip(tab.plots, tab.series):
            out += curve_updates(p, _frame(u.history, s))
        out += [u.preview] * len(tab.extra)
        out += refreshed(current) if u.model_name else [gr.skip()] * len(dropdowns)
        return out

    @guard
    def do_start(request: gr.Request, *args):
        n = len(tab.inputs)
        values, current = args[:n], list(args[n:])
        try:
            _check_numbers(tab.inputs, list(values))
            job.start(start_fn(cfg, job, *values), others=(other,), form=list(values),
                      owner=visitor(request))
        except ValueError as exc:  # bad form values: said where the status is, not as a badge
            gr.Warning(H.public_message(exc))
            yield [f"⚠ Not started: {H.public_message(exc)}"] + [gr.skip()] * (len(outputs) - 1)
            return
        for u in job.follow(raise_errors=True):
            yield render(u, current)

    tab.start.click(do_start, [*tab.inputs, *dropdowns], outputs, api_name=api,
                    concurrency_limit=None, show_progress="hidden")

    def do_cancel(request: gr.Request) -> str:
        """Cancelling… at once; with nothing running, the last result stays where it is. Only
        the visitor who started the run (or a signed-in operator) stops it."""
        if not job.running:
            gr.Info("Nothing is training.")
            u = job.view()
            return u.status if u is not None else "Nothing is training."
        return job.cancel(by=visitor(request))

    tab.cancel.click(guard(do_cancel), None, tab.status,
                     api_name=f"cancel_{api.split('_')[1]}", concurrency_limit=None,
                     show_progress="hidden")

    def attach(*current):
        """A (re)loaded page shows the running job (or the last one's end) and follows it; the
        form shows the values that run was started with (an uploaded image is not re-sent)."""
        if job.update is None:  # nothing ran yet; a generator must not end without a value
            yield [gr.skip()] * (len(outputs) + len(tab.inputs))
            return
        form = [gr.skip() if v is None or isinstance(c, gr.Image) else v
                for c, v in zip(tab.inputs, job.form or [None] * len(tab.inputs))]
        for u in job.follow():
            yield render(u, list(current)) + form

    demo.load(attach, dropdowns, outputs + list(tab.inputs), api_visibility="private",
              concurrency_limit=None, show_progress="hidden")


def training_banner(jobs: list[tuple[T.Job, str]]) -> str:
    """A line at the top of the page while a training runs (the page opens on Stylize)."""
    for job, tab in jobs:
        if job.running:
            u = job.view()
            return (f"⏳ A {job.kind} is running ({u.status if u else 'starting'}) — see the "
                    f"**{tab}** tab.")
    return ""


def build_app(cfg: UIConfig | None = None) -> gr.Blocks:
    """The whole UI as a ``gr.Blocks`` (queue configured; call ``launch`` on it or use
    ``ui.launch``)."""
    cfg = cfg or UIConfig()
    style_job, clf_job = T.Job("style training"), T.Job("classifier training")
    with gr.Blocks(title="normlab", fill_width=False, delete_cache=cfg.delete_cache) as demo:
        gr.Markdown(INTRO)
        banner = gr.Markdown(elem_id="nl_banner")
        with gr.Tabs(overflow_behavior="wrap", elem_id="nl_tabs"):
            st = _stylize_tab(cfg)
            ts = _train_style_tab(cfg)
            cl = _classify_tab(cfg)
            tc = _train_classifier_tab(cfg)
            lab = _norms_lab_tab(cfg)
            rp = _reports_tab(cfg)
            _about_tab(cfg)

        dropdowns = [st.model, st.compare_models, cl.model, cl.shift_models, lab.model, lab.models]

        def refreshed(current: list) -> list:
            sc, cc, lc = (H.model_choices(cfg, "stylize"), H.model_choices(cfg, "classify"),
                          H.lab_choices(cfg))
            return [_dropdown_update(sc, current[0]), _dropdown_update(sc, current[1], True),
                    _dropdown_update(cc, current[2]), _dropdown_update(cc, current[3], True),
                    _dropdown_update(lc, current[4]), _dropdown_update(lc, current[5], True)]

        def start_style(cfg, job, style, content, norm, size, steps, batch, name):
            return T.train_style(cfg, job, style, content, norm, size, steps, name,
                                 batch_size=batch)

        def start_clf(cfg, job, arch, norm, data, epochs, batch, lr, subset, train_dom, test_dom,
                      name):
            return T.train_classifier(cfg, job, arch, norm, data, epochs, name, batch_size=batch,
                                      lr=lr, train_subset=subset, train_domains=train_dom,
                                      test_domains=test_dom)

        _wire_training(cfg, demo, ts, style_job, clf_job, start_style, dropdowns, refreshed,
                       "train_style")
        _wire_training(cfg, demo, tc, clf_job, style_job, start_clf, dropdowns, refreshed,
                       "train_classifier")

        # models trained in other sessions (or before a restart) show up on page load
        demo.load(lambda *c: refreshed(list(c)), dropdowns, dropdowns, api_visibility="private")
        demo.load(lambda v: _dropdown_update(H.model_choices(cfg, "classify"), v, True),
                  lab.dv_models, lab.dv_models, api_visibility="private")
        demo.load(*st.info, api_visibility="private")
        demo.load(*st.gallery, api_visibility="private")
        demo.load(lambda: training_banner([(style_job, "Train a style"),
                                           (clf_job, "Train a classifier")]),
                  None, banner, api_visibility="private")
        demo.load(*rp.load, api_visibility="private")

    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.max_queue)
    demo.normlab_jobs = (style_job, clf_job)  # so a host (or a test) can cancel them on shutdown
    return demo


def parse_size(text: str) -> int:
    """"250mb" / "2gb" / "4096" → bytes."""
    t = str(text).strip().lower().replace(" ", "")
    for unit, mult in (("gb", 1 << 30), ("mb", 1 << 20), ("kb", 1 << 10), ("b", 1)):
        if t.endswith(unit):
            return int(float(t[:-len(unit)]) * mult)
    return int(t)


class UploadBudget:
    """ASGI middleware: an upload request (``…/upload``) larger than ``budget`` bytes in all
    is answered 413 before it is stored (a declared Content-Length) or cut off as soon as its
    body passes the budget (chunked bodies); gradio's ``max_file_size`` bounds each file only."""

    def __init__(self, app, budget: int) -> None:
        self.app, self.budget = app, budget

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http" or scope.get("method") != "POST" or \
                not scope.get("path", "").rstrip("/").endswith("/upload"):
            return await self.app(scope, receive, send)
        from starlette.responses import PlainTextResponse

        too_big = PlainTextResponse(f"upload larger than the server's budget of "
                                    f"{self.budget >> 20} MB per request", status_code=413)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.budget:
            return await too_big(scope, receive, send)
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message.get("type") == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.budget:
                    raise _OverBudget
            return message

        try:
            return await self.app(scope, counted, send)
        except _OverBudget:
            return await too_big(scope, receive, send)


class _OverBudget(Exception):
    pass


def launch_kwargs(cfg: UIConfig) -> dict:
    """``Blocks.launch`` settings: upload limit, theme/css (gradio 6 takes them in launch), and
    no folder served beyond gradio's own upload/output cache, the bundled sample photos and the
    report figures."""
    from weights import SAMPLES_DIR

    from starlette.middleware import Middleware

    return dict(max_file_size=cfg.max_file_size,
                app_kwargs={"middleware": [Middleware(UploadBudget,
                                                      budget=parse_size(cfg.upload_budget))]},
                allowed_paths=[str(SAMPLES_DIR), str(cfg.reports_dir)], show_error=True,
                theme=gr.themes.Soft(), css=CSS, footer_links=["api"])


def launch(cfg: UIConfig | None = None, host: str = "127.0.0.1", port: int | None = None,
           share: bool = False, **kwargs):
    """Build and serve the app (blocks unless ``prevent_thread_lock=True`` is passed). Gradio's
    own start-up lines are replaced by ours: its hint says ``share=True in launch()``, which a
    ``normlab ui`` user cannot do; ours says ``--share``."""
    cfg = cfg or UIConfig()
    demo = build_app(cfg)
    quiet = kwargs.pop("quiet", False)
    block = not kwargs.pop("prevent_thread_lock", False)
    demo.launch(server_name=host, server_port=port, share=share, quiet=True,
                prevent_thread_lock=True, **{**launch_kwargs(cfg), **kwargs})
    if not quiet:
        print(startup_message(demo.local_url, getattr(demo, "share_url", None)), flush=True)
    if block:
        demo.block_thread()
    return demo


def startup_message(local_url: str, share_url: str | None) -> str:
    """What ``normlab ui`` prints once the server is up."""
    lines = [f"normlab ui running on {local_url}"]
    lines.append(f"public link (temporary): {share_url}" if share_url else
                 "for a temporary public link, restart with `normlab ui --share`")
    return "\n".join(lines)
