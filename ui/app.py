"""The Gradio Blocks app: tabs, components and events over ``ui.handlers`` / ``ui.training``.

Only this module (and ``ui.cli`` lazily) imports gradio.
"""
from __future__ import annotations

import functools
import inspect
import logging

import gradio as gr
import pandas as pd

import norms

from . import handlers as H
from . import training as T
from .config import UIConfig

log = logging.getLogger("normlab.ui")

CSS = """
.nl-status { min-height: 2.2em; }
footer { display: none !important; }
"""

INTRO = ("**normlab** — normalization layers (BN, IN, BN+IN, BIN, IBN) in style-transfer and "
         "classification CNNs. This UI trains and runs either network; every button calls the same "
         "library functions as the `normlab` command line.")


def _message(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def guard(fn):
    """Turn library errors into ``gr.Error`` pop-ups with one line (never a stack trace in the
    browser); unexpected errors are logged with their traceback on the server."""

    def convert(exc: BaseException) -> gr.Error:
        if isinstance(exc, gr.Error):
            return exc
        if isinstance(exc, (ValueError, FileNotFoundError, PermissionError)):
            return gr.Error(_message(exc), print_exception=False)
        log.exception("handler %s failed", getattr(fn, "__name__", fn))
        return gr.Error(f"internal error ({type(exc).__name__}): {_message(exc)}",
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


def _frame(rows: list[dict], series: str, max_points: int = 600) -> pd.DataFrame:
    """One series of plot rows as a typed frame (untyped columns make the plot's axes nominal),
    thinned to at most ~``max_points`` points so long runs stay cheap to redraw."""
    rows = [r for r in rows if r["series"] == series]
    stride = -(-len(rows) // max_points)
    rows = rows[::-1][::stride][::-1] if stride > 1 else rows  # always keep the latest point
    return pd.DataFrame({"x": pd.Series([r["x"] for r in rows], dtype="float64"),
                         "value": pd.Series([r["value"] for r in rows], dtype="float64"),
                         "series": pd.Series([r["series"] for r in rows], dtype="str")})


def _prefer(options: list[str], wanted: str) -> str | None:
    """``wanted`` (or the option whose last path part is ``wanted``) if offered, else the first."""
    for o in options:
        if o == wanted or o.rstrip("/").rsplit("/", 1)[-1] == wanted:
            return o
    return options[0] if options else None


def _plot(title: str, x_title: str, y_title: str) -> gr.LinePlot:
    """A live training curve. One series per plot and no initial value: the browser fixes a
    plot's colour domain at its first data, so series that appear later would not be drawn."""
    return gr.LinePlot(None, x="x", y="value", title=title, x_title=x_title, y_title=y_title,
                       height=200)


def _first(choices: list[tuple[str, str]]) -> str | None:
    return choices[0][1] if choices else None


def _dropdown_update(choices, value=None, multiselect=False):
    values = [v for _, v in choices]
    if multiselect:
        keep = [v for v in (value or []) if v in values]
        return gr.update(choices=choices, value=keep or values[:3])
    return gr.update(choices=choices, value=value if value in values else _first(choices))


def build_app(cfg: UIConfig | None = None) -> gr.Blocks:
    """The whole UI as a ``gr.Blocks`` (queue configured; call ``launch`` on it or use
    ``ui.launch``)."""
    cfg = cfg or UIConfig()
    style_job, clf_job = T.Job(), T.Job()
    style_choices = H.model_choices(cfg, "stylize")
    clf_choices = H.model_choices(cfg, "classify")
    lab_choices = H.lab_choices(cfg)
    shifts = H.shift_names()
    norm_names = list(norms.NORM_NAMES)
    samples = _sample_images()

    with gr.Blocks(title="normlab", fill_width=False) as demo:
        gr.Markdown(INTRO)
        with gr.Tabs():
            # ------------------------------------------------------------------ Stylize
            with gr.Tab("Stylize", id="stylize"):
                with gr.Row():
                    with gr.Column():
                        st_in = gr.Image(label="Input image", type="pil", image_mode="RGB",
                                         sources=["upload", "clipboard"], elem_id="st_in",
                                         height=360)
                        st_model = gr.Dropdown(style_choices, value=_first(style_choices),
                                               label="Style model", allow_custom_value=True,
                                               elem_id="st_model")
                        st_upload = gr.File(label="…or upload a model (.safetensors or "
                                            "pytorch/examples .pth)",
                                            file_types=[".safetensors", ".pth"], height=120)
                        st_info = gr.Markdown(elem_classes="nl-status")
                        with gr.Row():
                            st_strength = gr.Slider(0, 1, value=1, step=0.05, label="Strength")
                            st_max = gr.Slider(0, 2048, value=1024, step=64,
                                               label="Max size (px, 0 = full size)")
                        st_color = gr.Checkbox(label="Preserve colour (transfer luminance only)")
                        with gr.Row(visible=False) as st_gate_row:
                            st_gate_on = gr.Checkbox(label="Override learned gates ρ", scale=1)
                            st_gate = gr.Slider(-1, 1, value=0, step=0.05, scale=3,
                                                label="Gate: −1 = all IN · 0 = learned · +1 = all BN")
                        st_run = gr.Button("Stylize", variant="primary", elem_id="st_run")
                        if samples:
                            gr.Examples(samples, inputs=st_in, label="Sample photos")
                    with gr.Column():
                        st_out = gr.Image(label="Result", type="pil", format="png",
                                          interactive=False, buttons=["download", "fullscreen"],
                                          elem_id="st_out", height=560)
                with gr.Accordion("Compare norms: the same image through several models",
                                  open=False):
                    with gr.Row():
                        cmp_models = gr.Dropdown(style_choices, value=[v for _, v in
                                                                       style_choices][:4],
                                                 multiselect=True, label="Models",
                                                 allow_custom_value=True, scale=3)
                        cmp_max = gr.Slider(128, 1024, value=384, step=64, label="Max size")
                    cmp_run = gr.Button("Compare")
                    cmp_out = gr.Image(label="Comparison", type="pil", format="png",
                                       interactive=False)
                with gr.Accordion("Webcam (live)", open=False):
                    with gr.Row():
                        cam_in = gr.Image(label="Webcam", sources=["webcam"], streaming=True,
                                          type="pil", image_mode="RGB")
                        cam_out = gr.Image(label="Stylized", type="pil", interactive=False)

            # ------------------------------------------------------------------ Train a style
            with gr.Tab("Train a style", id="train_style"):
                gr.Markdown("Train a feed-forward style network (Johnson et al. 2016) on a content "
                            "folder the operator allowed. One training job runs at a time; "
                            "others wait in the queue. The finished model appears in the Stylize "
                            "tab at once.")
                content_opts = T.content_dirs(cfg)
                with gr.Row():
                    with gr.Column():
                        ts_style = gr.Image(label="Style image", type="filepath",
                                            sources=["upload", "clipboard"], elem_id="ts_style")
                        ts_content = gr.Dropdown(content_opts, value=_prefer(content_opts,
                                                                             "content"),
                                                 label="Content images (server folder)")
                        with gr.Row():
                            ts_norm = gr.Dropdown(norm_names, value="bin" if "bin" in norm_names
                                                  else norm_names[0], label="Norm")
                            ts_size = gr.Slider(64, 512, value=256, step=32, label="Image size",
                                                elem_id="ts_size")
                        with gr.Row():
                            ts_steps = gr.Number(200, precision=0, minimum=1, maximum=100000,
                                                 label="Steps", elem_id="ts_steps")
                            ts_batch = gr.Number(4, precision=0, minimum=1, maximum=64,
                                                 label="Batch size")
                        ts_name = gr.Textbox(label="Model name (optional)")
                        with gr.Row():
                            ts_start = gr.Button("Start training", variant="primary",
                                                 elem_id="ts_start")
                            ts_cancel = gr.Button("Cancel", variant="stop")
                        ts_status = gr.Markdown(elem_classes="nl-status", elem_id="ts_status")
                    with gr.Column():
                        ts_content_plot = _plot("Content loss", "step", "loss")
                        ts_style_plot = _plot("Style loss", "step", "loss")
                        ts_preview = gr.Image(label="Preview", type="pil", interactive=False,
                                              height=256)

            # ------------------------------------------------------------------ Classify
            with gr.Tab("Classify", id="classify"):
                with gr.Row():
                    with gr.Column():
                        cl_in = gr.Image(label="Image", type="pil", image_mode="RGB",
                                         sources=["upload", "clipboard"], height=300,
                                         elem_id="cl_in")
                        cl_model = gr.Dropdown(clf_choices, value=_first(clf_choices),
                                               label="Classifier", allow_custom_value=True)
                        cl_topk = gr.Slider(1, 10, value=5, step=1, label="Top-k")
                        cl_run = gr.Button("Classify", variant="primary", elem_id="cl_run")
                        if samples:
                            gr.Examples(samples, inputs=cl_in, label="Sample photos")
                    with gr.Column():
                        cl_out = gr.Label(label="Prediction")
                gr.Markdown("### Shift explorer\nApply an appearance shift and see how models "
                            "with different norms change their minds (uses the image above).")
                with gr.Row():
                    sx_models = gr.Dropdown(clf_choices, value=[v for _, v in clf_choices][:3],
                                            multiselect=True, label="Classifiers",
                                            allow_custom_value=True, scale=2)
                    sx_shift = gr.Dropdown(shifts, value=_prefer(shifts, "brightness"),
                                           label="Shift", allow_custom_value=True)
                    sx_strength = _strength_slider(_prefer(shifts, "brightness"))
                sx_run = gr.Button("Compare under shift", elem_id="sx_run")
                with gr.Row():
                    sx_img = gr.Image(label="Shifted image", type="pil", interactive=False,
                                      height=224)
                    sx_table = gr.Markdown()

            # ------------------------------------------------------------------ Train a classifier
            with gr.Tab("Train a classifier", id="train_classifier"):
                gr.Markdown("Train a CIFAR-style ResNet (or any registered architecture) with a "
                            "chosen norm on a dataset folder the operator allowed. One training "
                            "job at a time; the model appears in the Classify tab at once.")
                archs = _arch_choices()
                data_opts = T.dataset_dirs(cfg)
                with gr.Row():
                    with gr.Column():
                        tc_arch = gr.Dropdown(archs, value=archs[0] if archs else None,
                                              label="Architecture")
                        tc_norm = gr.Dropdown(norm_names, value="bin" if "bin" in norm_names
                                              else norm_names[0], label="Norm")
                        tc_data = gr.Dropdown(data_opts, value=_first(data_opts),
                                              label="Dataset (server folder)")
                        with gr.Row():
                            tc_epochs = gr.Number(1, precision=0, minimum=1, maximum=500,
                                                  label="Epochs", elem_id="tc_epochs")
                            tc_batch = gr.Number(128, precision=0, minimum=2, maximum=1024,
                                                 label="Batch size")
                            tc_lr = gr.Number(0.1, minimum=1e-5, maximum=1.0, label="Learning rate")
                        with gr.Row():
                            tc_subset = gr.Number(2000, precision=0, minimum=0,
                                                  label="Training images (0 = all)",
                                                  elem_id="tc_subset")
                            tc_train_dom = gr.Textbox(label="PACS train domains (empty = the rest)")
                            tc_test_dom = gr.Textbox("sketch", label="PACS test domains")
                        tc_name = gr.Textbox(label="Model name (optional)")
                        with gr.Row():
                            tc_start = gr.Button("Start training", variant="primary",
                                                 elem_id="tc_start")
                            tc_cancel = gr.Button("Cancel", variant="stop")
                        tc_status = gr.Markdown(elem_classes="nl-status", elem_id="tc_status")
                    with gr.Column():
                        tc_loss_plot = _plot("Training loss", "epoch", "loss")
                        tc_acc_plot = _plot("Training accuracy", "epoch", "accuracy (%)")
                        tc_test_plot = _plot("Test accuracy (end of each epoch)", "epoch",
                                             "accuracy (%)")

            # ------------------------------------------------------------------ Norms lab
            with gr.Tab("Norms lab", id="norms_lab"):
                gr.Markdown("### Learned gates\nBIN learns, per channel, how much to behave like "
                            "BN (ρ = 1) or IN (ρ = 0). Histograms of ρ by depth (BIN paper, "
                            "Fig. 2/6).")
                with gr.Row():
                    lab_model = gr.Dropdown(lab_choices, value=_first(lab_choices),
                                            label="Model", allow_custom_value=True, scale=3)
                    lab_run = gr.Button("Show gates", elem_id="lab_run")
                lab_plot = gr.Plot(label="ρ histograms")
                lab_table = gr.Markdown()
                gr.Markdown("### Feature statistics: IN removes style\nPer-channel mean and std "
                            "of a norm layer's output for an image and its shifted copy. Under "
                            "IN the two lines coincide (the style/contrast is normalised away); "
                            "under BN they follow the shift; BIN sits in between.")
                with gr.Row():
                    fs_in = gr.Image(label="Image", type="pil", image_mode="RGB",
                                     sources=["upload", "clipboard"], height=224, elem_id="fs_in")
                    fs_shifted = gr.Image(label="Shifted copy", type="pil", interactive=False,
                                          height=224)
                with gr.Row():
                    fs_models = gr.Dropdown(lab_choices, value=[v for _, v in lab_choices][:3],
                                            multiselect=True, label="Models",
                                            allow_custom_value=True, scale=3)
                    fs_depth = gr.Slider(0, 1, value=0, step=0.05,
                                         label="Layer depth (0 = first norm layer → 1 = last)", scale=2)
                    fs_shift = gr.Dropdown(shifts, value=_prefer(shifts, "brightness"),
                                           label="Shift", allow_custom_value=True)
                    fs_strength = _strength_slider(_prefer(shifts, "brightness"))
                fs_run = gr.Button("Compute statistics", elem_id="fs_run")
                fs_plot = gr.Plot(label="Channel statistics")

            # ------------------------------------------------------------------ About
            with gr.Tab("About", id="about"):
                gr.Markdown(H.about_markdown())

        # ====================================================================== events
        style_inputs = [st_in, st_model, st_upload, st_strength, st_color, st_max, st_gate_on,
                        st_gate]

        @guard
        def do_stylize(image, model, upload, strength, color, max_size, gate_on, gate):
            return H.stylize(cfg, image, model, upload, strength, color, max_size,
                             gate if gate_on else None)

        st_run.click(do_stylize, style_inputs, st_out, api_name="stylize")
        def do_stylize_live(image, *rest):
            """The gate slider re-renders at once, but only when there is an image to show."""
            return gr.skip() if image is None else do_stylize(image, *rest)

        st_gate.release(do_stylize_live, style_inputs, st_out, api_visibility="private")
        st_gate_on.input(do_stylize_live, style_inputs, st_out, api_visibility="private")

        @guard
        def do_info(model, upload):
            text, gated = H.style_model_info(cfg, model, upload)
            return text, gr.update(visible=gated)

        for trig in (st_model.change, st_upload.change):
            trig(do_info, [st_model, st_upload], [st_info, st_gate_row],
                 api_visibility="private")
        demo.load(do_info, [st_model, st_upload], [st_info, st_gate_row],
                  api_visibility="private")

        @guard
        def do_compare(image, models, max_size):
            return H.compare(cfg, image, models, max_size)

        cmp_run.click(do_compare, [st_in, cmp_models, cmp_max], cmp_out, api_name="compare")

        @guard
        def do_webcam(frame, model, strength, color):
            if frame is None:
                return None
            return H.stylize(cfg, frame, model, None, strength, color, 320)

        cam_in.stream(do_webcam, [cam_in, st_model, st_strength, st_color], cam_out,
                      stream_every=0.5, time_limit=120, concurrency_limit=1,
                      api_visibility="private")

        @guard
        def do_classify(image, model, topk):
            return H.classify(cfg, image, model, topk)

        cl_run.click(do_classify, [cl_in, cl_model, cl_topk], cl_out, api_name="classify")

        @guard
        def do_shift(image, models, shift, strength):
            shifted, rows = H.shift_explorer(cfg, image, models, shift, strength)
            return shifted, H.shift_table(rows)

        sx_run.click(do_shift, [cl_in, sx_models, sx_shift, sx_strength], [sx_img, sx_table],
                     api_name="shift_explorer")

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

        def strength_for(shift):
            try:
                lo, hi, default = H.shift_range(shift)
            except ValueError:
                return gr.skip()
            return gr.update(minimum=lo, maximum=hi, value=default, step=(hi - lo) / 100)

        sx_shift.change(strength_for, sx_shift, sx_strength, api_visibility="private")
        fs_shift.change(strength_for, fs_shift, fs_strength, api_visibility="private")

        # ---- training: one job at a time across both tabs (one accelerator)
        model_dropdowns = [st_model, cmp_models, cl_model, sx_models, lab_model, fs_models]

        def refreshed(current: list) -> list:
            sc, cc, lc = (H.model_choices(cfg, "stylize"), H.model_choices(cfg, "classify"),
                          H.lab_choices(cfg))
            return [_dropdown_update(sc, current[0]), _dropdown_update(sc, current[1], True),
                    _dropdown_update(cc, current[2]), _dropdown_update(cc, current[3], True),
                    _dropdown_update(lc, current[4]), _dropdown_update(lc, current[5], True)]

        def train_outputs(u: T.TrainUpdate, plots: list[str], extra: list, current: list):
            out = [u.status, *[_frame(u.history, s) for s in plots], *extra]
            out += refreshed(current) if u.model_name else [gr.skip()] * len(model_dropdowns)
            return out

        @guard
        def do_train_style(style, content, norm, size, steps, batch, name, c0, c1, c2, c3, c4,
                           c5, progress=gr.Progress()):
            current = (c0, c1, c2, c3, c4, c5)
            progress(0, desc="starting")
            for u in T.train_style(cfg, style_job, style, content, norm, size, steps, name,
                                   batch_size=batch,
                                   on_progress=lambda f, d: progress(f, desc=d)):
                yield train_outputs(u, ["content", "style"], [u.preview], list(current))

        ts_start.click(do_train_style,
                       [ts_style, ts_content, ts_norm, ts_size, ts_steps, ts_batch, ts_name,
                        *model_dropdowns],
                       [ts_status, ts_content_plot, ts_style_plot, ts_preview, *model_dropdowns],
                       api_name="train_style", concurrency_limit=1, concurrency_id="train",
                       show_progress_on=ts_status)
        ts_cancel.click(guard(style_job.cancel), None, ts_status, api_name="cancel_style",
                        concurrency_limit=None)

        @guard
        def do_train_clf(arch, norm, data, epochs, batch, lr, subset, train_dom, test_dom, name,
                         c0, c1, c2, c3, c4, c5, progress=gr.Progress()):
            current = (c0, c1, c2, c3, c4, c5)
            progress(0, desc="starting")
            for u in T.train_classifier(cfg, clf_job, arch, norm, data, epochs, name,
                                        batch_size=batch, lr=lr, train_subset=subset,
                                        train_domains=train_dom, test_domains=test_dom,
                                        on_progress=lambda f, d: progress(f, desc=d)):
                yield train_outputs(u, ["train loss", "train acc", "test acc"], [],
                                    list(current))

        tc_start.click(do_train_clf,
                       [tc_arch, tc_norm, tc_data, tc_epochs, tc_batch, tc_lr, tc_subset,
                        tc_train_dom, tc_test_dom, tc_name,
                        *model_dropdowns],
                       [tc_status, tc_loss_plot, tc_acc_plot, tc_test_plot, *model_dropdowns],
                       api_name="train_classifier", concurrency_limit=1, concurrency_id="train",
                       show_progress_on=tc_status)
        tc_cancel.click(guard(clf_job.cancel), None, tc_status, api_name="cancel_classifier",
                        concurrency_limit=None)

        # models trained in other sessions (or before a restart) show up on page load
        def on_load(c0, c1, c2, c3, c4, c5):
            return refreshed([c0, c1, c2, c3, c4, c5])

        demo.load(on_load, model_dropdowns, model_dropdowns, api_visibility="private")

    demo.queue(default_concurrency_limit=cfg.concurrency, max_size=cfg.max_queue)
    demo.normlab_jobs = (style_job, clf_job)  # so a host (or a test) can cancel them on shutdown
    return demo


def _strength_slider(shift: str | None) -> gr.Slider:
    """A strength slider in the shift's own units (classify.SHIFTS: e.g. RGB+50, contrast ×1.5)."""
    try:
        lo, hi, default = H.shift_range(shift)
    except ValueError:
        lo, hi, default = 0.0, 1.0, 1.0
    return gr.Slider(lo, hi, value=default, step=(hi - lo) / 100, label="Strength (shift's units)")


def _sample_images() -> list[list[str]]:
    """The bundled sample photos (weights/samples), as gr.Examples rows."""
    from weights import SAMPLES_DIR

    return [[str(p)] for p in sorted(SAMPLES_DIR.glob("*"))
            if p.suffix.lower() in {".jpg", ".jpeg", ".png"}][:8]


def _arch_choices() -> list[str]:
    """Architectures for the training tab, the small CIFAR ResNets first."""
    try:
        names = list(H.need("classify", "list_models")())
    except ValueError:
        return []
    cifar = [n for n in ("resnet20", "resnet32", "resnet44", "resnet56", "resnet110") if n in names]
    return cifar + [n for n in names if n not in cifar]


def launch_kwargs(cfg: UIConfig) -> dict:
    """``Blocks.launch`` settings: upload limit, theme/css (gradio 6 takes them in launch), and
    no folder served beyond gradio's own upload/output cache and the bundled sample photos."""
    from weights import SAMPLES_DIR

    return dict(max_file_size=cfg.max_file_size, allowed_paths=[str(SAMPLES_DIR)], show_error=True,
                theme=gr.themes.Soft(), css=CSS, footer_links=["api"])


def launch(cfg: UIConfig | None = None, host: str = "127.0.0.1", port: int | None = None,
           share: bool = False, **kwargs):
    """Build and serve the app (blocks unless ``prevent_thread_lock=True`` is passed)."""
    cfg = cfg or UIConfig()
    demo = build_app(cfg)
    demo.launch(server_name=host, server_port=port, share=share,
                **{**launch_kwargs(cfg), **kwargs})
    return demo
