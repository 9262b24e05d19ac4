"""The running web UI: every public endpoint through gradio_client, a real browser (Playwright
driving Debian's Chromium), and 20 concurrent stylize requests."""
from __future__ import annotations

import contextlib
import os
import shutil
import socket
from pathlib import Path

import pytest
from PIL import Image

import weights
from conftest import ROOT, need_shared
from ui import handlers as H
from test_ui_handlers import gradient_image, make_ui_config

gradio_client = pytest.importorskip("gradio_client")
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--headless", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on 127.0.0.1 and a free port, over tiny models and folders; yields (url, cfg, tmp)."""
    from ui import launch

    tmp = tmp_path_factory.mktemp("uiapp")
    cfg = make_ui_config(tmp)
    port = free_port()
    demo = launch(cfg, port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/", cfg, tmp
    finally:
        for job in demo.normlab_jobs:
            job.cancel()
        demo.close()


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server[0], verbose=False)


@pytest.fixture(scope="module")
def small_png(server) -> str:
    p = server[2] / "in.png"
    gradient_image(36, 28).save(p)
    return str(p)


def _size(path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


# ----------------------------------------------------------------------------- gradio_client

def test_public_endpoints_are_the_documented_ones(client):
    names = set(client.view_api(return_format="dict", print_info=False)["named_endpoints"])
    assert names == {"/stylize", "/stylize_video", "/compare", "/classify", "/shift_explorer", "/gates",
                     "/feature_stats", "/train_style", "/cancel_style", "/train_classifier",
                     "/cancel_classifier", "/report", "/stylize_painting", "/optimize_painting",
                     "/divergence"}


def test_server_binds_loopback_and_limits_uploads(server):
    import httpx

    url, cfg, _ = server
    assert url.startswith("http://127.0.0.1:")
    config = httpx.get(url + "config", timeout=30).json()
    assert config["max_file_size"] == 200 * 1024 * 1024 and cfg.max_file_size == "200mb"
    # nothing outside gradio's cache and the sample photos is served
    r = httpx.get(url + "gradio_api/file=" + str(ROOT / "pyproject.toml"), timeout=30)
    assert r.status_code in (403, 404)
    from weights import SAMPLES_DIR

    sample = next((p for p in sorted(SAMPLES_DIR.glob("*.jpg"))), None)
    if sample is not None:  # ... while the same route serves what is allowed
        assert httpx.get(url + "gradio_api/file=" + str(sample), timeout=30).status_code == 200


def test_stylize_endpoint(client, small_png):
    from gradio_client import handle_file

    out = client.predict(handle_file(small_png), "ui:tiny-bin", None, 1.0, False, 0, True, -0.5,
                         api_name="/stylize")
    assert _size(out) == (36, 28)


def test_stylize_endpoint_shipped_model(client, small_png):
    import stylize

    shipped = getattr(stylize, "list_models", lambda: [])()
    if not shipped:
        pytest.skip("no stylize model is shipped in weights/")
    from gradio_client import handle_file

    out = client.predict(handle_file(small_png), shipped[0], None, 0.8, True, 0, False, 0,
                         api_name="/stylize")
    assert _size(out) == (36, 28)


def test_classify_endpoint_shipped_model(client, small_png):
    import classify

    shipped = classify.list_shipped()
    if not shipped:
        pytest.skip("no classifier is shipped in weights/")
    from gradio_client import handle_file

    label = client.predict(handle_file(small_png), shipped[0], 3, api_name="/classify")
    assert len(label["confidences"]) == 3
    assert label["label"] in classify.load_classifier(shipped[0]).class_names


def test_bad_input_is_one_line_error(client, small_png):
    from gradio_client import handle_file

    with pytest.raises(Exception, match="unknown stylize model 'nope'"):
        client.predict(handle_file(small_png), "nope", None, 1.0, False, 0, False, 0,
                       api_name="/stylize")
    with pytest.raises(Exception, match="upload an image first"):
        client.predict(None, "ui:tiny-in", None, 1.0, False, 0, False, 0, api_name="/stylize")


def test_compare_endpoint(client, small_png):
    from gradio_client import handle_file

    out = client.predict(handle_file(small_png), ["ui:tiny-bin", "ui:tiny-in"], 128,
                         api_name="/compare")
    assert _size(out)[0] >= 2 * 36


def test_classify_endpoints(client, small_png):
    from gradio_client import handle_file

    label = client.predict(handle_file(small_png), "ui:r20-bn", 2, api_name="/classify")
    assert len(label["confidences"]) == 2
    shifted, chart, table = client.predict(handle_file(small_png), ["ui:r20-bn", "ui:r20-bin"],
                                           "brightness", 0.5, api_name="/shift_explorer")
    assert _size(shifted) == (36, 28) and "ui:r20-bin" in table and chart is not None


def test_norms_lab_endpoints(client, small_png):
    from gradio_client import handle_file

    plot, table = client.predict("stylize:ui:tiny-bin", api_name="/gates")
    assert plot is not None and "mean ρ" in table
    shifted, plot = client.predict(handle_file(small_png), ["classify:ui:r20-in",
                                                            "classify:ui:r20-bn"],
                                   0.5, "contrast", 0.5, api_name="/feature_stats")
    assert _size(shifted) == (36, 28) and plot is not None


def test_report_endpoint_serves_the_report_and_its_figures(client):
    import httpx

    md = client.predict("bin-cifar", api_name="/report")
    assert "| bn | 3 |" in md and "gallery" not in md
    src = md.split("](gradio_api/file=")[1].split(")")[0]  # the inline figure is served
    r = httpx.get(client.src.rstrip("/") + "/gradio_api/file=" + src, timeout=30)
    assert r.status_code == 200 and Image.open(__import__("io").BytesIO(r.content)).size == (64, 48)
    # gradio refuses a value outside the dropdown's choices before the handler sees it
    with pytest.raises(Exception, match="not in the list of choices|pick one of the listed"):
        client.predict("../secret", api_name="/report")


def test_train_classifier_endpoint_then_model_is_usable(client, server, small_png):
    from gradio_client import handle_file

    from ui import handlers as H
    from ui import training as T

    cfg = server[1]
    data = T.dataset_dirs(cfg)[0][1]
    current = ["ui:tiny-bin", [], "ui:r20-bn", [], "stylize:ui:tiny-bin", []]
    out = client.predict("resnet20", "bn", data, 1, 4, 0.05, 0, "", "", "via-api", *current,
                         api_name="/train_classifier")
    assert "ui:via-api" in out[0]
    assert "ui:via-api" in [v for _, v in H.model_choices(cfg, "classify")]
    label = client.predict(handle_file(small_png), "ui:via-api", 1, api_name="/classify")
    assert label["label"] in {"a", "b"}
    assert "test accuracy" in out[0]  # the finish message reports the final accuracy
    # Cancel with nothing running keeps the finished run's line (a toast says nothing runs)
    assert client.predict(api_name="/cancel_classifier") == out[0]


def test_cancel_stops_a_running_training(client, server):
    import time

    from ui import training as T

    data = T.dataset_dirs(server[1])[0][1]
    current = ["ui:tiny-bin", [], "ui:r20-bn", [], "stylize:ui:tiny-bin", []]
    job = client.submit("resnet20", "in", data, 200, 4, 0.05, 0, "", "", "to-cancel", *current,
                        api_name="/train_classifier")
    try:
        deadline = time.monotonic() + 120
        while not list((server[1].runs_dir / "classify").glob("*-to-cancel/metrics.jsonl")):
            assert time.monotonic() < deadline and not job.done(), "training never got going"
            time.sleep(0.2)
    finally:
        assert client.predict(api_name="/cancel_classifier").startswith("cancelling…")
    out = job.result(timeout=120)
    assert out[0].startswith("Cancelled") and "to-cancel" not in server[1].registry.names(
        "classify")


def test_train_style_endpoint(client, server):
    need_shared("weights", "vgg19_normalised_relu3_1.pth")
    from gradio_client import handle_file

    from ui import training as T

    style = server[2] / "style.png"
    gradient_image(40, 40, seed=3).save(style)
    current = ["ui:tiny-bin", [], "ui:r20-bn", [], "stylize:ui:tiny-bin", []]
    out = client.predict(handle_file(str(style)), T.content_dirs(server[1])[0][1], "in", 64, 2, 2,
                         "api-style", *current, api_name="/train_style")
    assert "ui:api-style" in out[0]
    assert client.predict(api_name="/cancel_style") == out[0]


# ----------------------------------------------------------------------------- hostile inputs

def test_hostile_inputs_get_clean_one_line_errors(client, server):
    from gradio_client import handle_file

    from test_ui_handlers import crafted_style_model

    tmp = server[2]
    fake = tmp / "not-an-image.jpg"
    fake.write_bytes(b"<html>not a jpeg</html>" * 20)
    huge = crafted_style_model(tmp / "huge.safetensors", num_residual=10**9)
    png = tmp / "ok.png"
    gradient_image(20, 20).save(png)
    cases = [
        ("not an image this server can read",
         lambda: client.predict(handle_file(str(fake)), "cifar10_resnet20_bn", 3,
                                api_name="/classify")),
        ("residual",
         lambda: client.predict(handle_file(str(png)), None, handle_file(str(huge)), 1.0, False,
                                0, False, 0, api_name="/stylize")),
        ("shadow",  # gradio's own choice check names the typed value; no loader runs
         lambda: client.predict(handle_file(str(png)), ["ui:r20-bn"], "style:/etc/shadow", 1.0,
                                api_name="/shift_explorer")),
    ]
    for expected, call in cases:
        with pytest.raises(Exception) as err:
            call()
        text = str(err.value)
        assert expected in text, text
        assert str(tmp) not in text and "/tmp/" not in text and "Traceback" not in text


def test_launch_prints_the_share_flag_not_gradios_hint(tmp_path, capfd):
    from ui import launch

    cfg = make_ui_config(tmp_path, with_models=False)
    demo = launch(cfg, port=free_port(), prevent_thread_lock=True)
    try:
        out = capfd.readouterr().out
    finally:
        demo.close()
    assert "normlab ui running on http://127.0.0.1:" in out and "--share" in out
    assert "share=True" not in out


# ----------------------------------------------------------------------------- load

def test_twenty_concurrent_stylize_requests(server, small_png):
    import io

    import httpx
    from gradio_client import handle_file

    # results stay on the server (download_files=False): identical outputs downloaded at once
    # would race on the client's own cache file, which is not what this test is about
    client = gradio_client.Client(server[0], verbose=False, download_files=False)
    jobs = [client.submit(handle_file(small_png), "ui:tiny-in", None, 1.0, False, 0, False, 0,
                          api_name="/stylize") for _ in range(20)]
    outs = [j.result(timeout=240) for j in jobs]
    sizes = []
    with httpx.Client(timeout=60) as http:
        for o in outs:
            r = http.get(o["url"])
            r.raise_for_status()
            sizes.append(Image.open(io.BytesIO(r.content)).size)
    assert sizes == [(36, 28)] * 20


# ----------------------------------------------------------------------------- real browser

def _browser():
    """Playwright's sync API and Debian's Chromium, or a skip (a failure when
    NORMLAB_REQUIRE_BROWSER=1)."""
    missing = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = "playwright is not installed"
    if missing is None and not (Path(CHROMIUM).exists() or shutil.which("chromium")):
        missing = f"{CHROMIUM} is not installed"
    if missing:
        if os.environ.get("NORMLAB_REQUIRE_BROWSER") == "1":
            pytest.fail(missing + " but NORMLAB_REQUIRE_BROWSER=1")
        pytest.skip(missing)
    return sync_playwright


def _chromium(p):
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    return p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)


@contextlib.contextmanager
def _page(server, width: int = 1280, height: int = 900):
    """A Chromium page on the app, loaded (the Stylize button is up); closed afterwards."""
    ARTIFACTS.mkdir(exist_ok=True)
    with _browser()() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.goto(server[0], wait_until="domcontentloaded")
            page.locator("#st_run").wait_for(timeout=60_000)
            yield page
        finally:
            browser.close()


def _toasts(page) -> str:
    return " ".join(page.locator(".toast-body, [data-testid='toast-body']").all_inner_texts())


DOCS = ROOT / "docs"


def _settings(page) -> None:
    """Open the Stylize tab's settings (model, style, blend, gates, own model)."""
    page.get_by_text("Model, blend, strength and size").click()
    page.locator("#st_model").wait_for(state="visible", timeout=15_000)


def _loaded(page, selector: str, timeout: int = 60_000) -> None:
    page.wait_for_function(
        "s => { const i = document.querySelector(s); return i && i.complete && i.naturalWidth > 0"
        " && !i.closest('.hide'); }", arg=selector, timeout=timeout)


def _badges(page, *selectors: str) -> list[str]:
    """The selectors whose component shows gradio's red "Error" badge."""
    return [s for s in selectors if page.locator(s).count() and (
        page.locator(f"{s} .error").count()
        or "Error" in page.locator(s).first.inner_text(timeout=5_000).split("\n"))]


@pytest.mark.browser
def test_browser_stylize_flow_on_desktop_and_phone(server, small_png):
    """Issue 35.7/35.10. At 1400×900 the photo, the result beside it, Stylize/Stop and the style
    thumbnails are above the fold; a thumbnail click re-renders the result in that style, and the
    download is named after the input and the style. On a 390×844 phone the result sits right
    under the photo. An image over the server's limit is named with its size on upload."""
    style_models = [v for _, v in H.model_choices(server[1], "stylize")]
    gallery = H.style_gallery(server[1])
    pick = next((i for i, g in enumerate(gallery) if g[3]), len(gallery) - 1)
    want = f"-{gallery[pick][3] or H.style_label(H.load_style(server[1], gallery[pick][2]), None)}"
    with _page(server, 1400, 900) as page:
        for sel in ("#st_in", "#st_out", "#st_run", "#st_stop", "#st_gallery"):
            box = page.locator(sel).bounding_box()
            assert box["y"] + min(box["height"], 120) <= 900, (sel, box)
        photo, result = page.locator("#st_in").bounding_box(), page.locator("#st_out").bounding_box()
        assert result["x"] > photo["x"] + photo["width"] - 5 and abs(result["y"] - photo["y"]) < 5
        # models registered after the server was built (by other tests) join on the page's
        # load-time refresh: wait for it rather than count the build-time thumbnails
        assert len(gallery) >= len(style_models)
        page.wait_for_function("n => document.querySelectorAll('#st_gallery .thumbnail-item')"
                               ".length === n", arg=len(gallery), timeout=30_000)
        page.locator("#st_in input[type=file]").set_input_files(small_png)
        page.locator("#st_in img").first.wait_for(timeout=30_000)
        page.locator("#st_gallery .thumbnail-item").nth(pick).click()  # no Stylize click needed
        page.wait_for_function(
            "w => { const i = document.querySelector('#st_out img');"
            " return i && i.complete && i.naturalWidth > 0 && decodeURIComponent(i.src)"
            ".includes(w + '.png'); }", arg=want, timeout=90_000)
        size = page.locator("#st_out img").first.evaluate(
            "img => [img.naturalWidth, img.naturalHeight]")
        assert "rror" not in _toasts(page)
        page.screenshot(path=str(ARTIFACTS / "ui_stylize_1400x900.png"))
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(500)
        photo, result = page.locator("#st_in").bounding_box(), page.locator("#st_out").bounding_box()
        assert result["y"] >= photo["y"] + photo["height"] - 5 and abs(result["x"] - photo["x"]) < 5
        assert result["y"] - (photo["y"] + photo["height"]) < 60  # right under it
        page.screenshot(path=str(ARTIFACTS / "ui_stylize_phone.png"))
        cfg = server[1]
        limit = cfg.max_pixels
        cfg.max_pixels = 500  # 36×28 = 1008 px is now too large
        try:
            page.set_viewport_size({"width": 1400, "height": 900})
            page.locator("#st_in input[type=file]").set_input_files(small_png)
            page.get_by_text("36×28 (0.00101 MP) is larger than this server's limit of "
                             "0.0005 MP; resize it or raise --memory-budget").first.wait_for(
                timeout=30_000)
        finally:
            cfg.max_pixels = limit
        assert "decompression" not in page.locator("body").inner_text().lower()
    assert tuple(size) == _size(small_png)


@pytest.mark.browser
def test_browser_gate_and_clean_upload_errors(server, small_png):
    """The gate slider is disabled until 'Override' is ticked; a non-image named .jpg gives one
    message with no server path, and a new image clears the failed prediction."""
    fake = server[2] / "fake.jpg"
    fake.write_bytes(b"GIF89a? no, just text" * 30)
    with _page(server, 1400, 900) as page:
        _settings(page)
        gate_on = page.locator("#st_gate_on input[type=checkbox]")
        gate_on.wait_for(timeout=30_000)  # the model it opens on (BIN) shows the gate row
        assert page.locator("#st_gate input[type=range]").is_disabled()
        page.locator("#st_gate_on").get_by_text("Override learned gates").click()
        page.wait_for_function("() => !document.querySelector('#st_gate input[type=range]')"
                               ".disabled", timeout=15_000)
        page.get_by_role("tab", name="Classify").click()
        page.locator("#cl_in input[type=file]").set_input_files(str(fake))
        page.wait_for_timeout(500)
        page.locator("#cl_run").click()
        page.get_by_text("not an image this server can read").first.wait_for(timeout=30_000)
        text = _toasts(page) + page.locator("body").inner_text()
        assert "Could not preprocess" not in text and str(server[2]) not in text
        assert "/tmp/" not in text and "UnidentifiedImageError" not in text
        page.locator("#cl_in input[type=file]").set_input_files(small_png)
        page.wait_for_function("() => !document.querySelector('#cl_out').innerText"
                               ".includes('Error')", timeout=30_000)
        page.locator("#cl_run").click()
        page.locator("#cl_view img").first.wait_for(timeout=60_000)
        assert "Error" not in page.locator("#cl_out").inner_text()
        page.locator("#sx_run").click()  # the shift explorer answers with a bar chart
        page.locator("#sx_chart img").first.wait_for(
            timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "ui_classify_1400x900.png"))


@pytest.mark.browser
def test_browser_reports_show_figures_inline(server):
    """Issue 35.9: the figure is inline, next to its text, not in a gallery below."""
    with _page(server) as page:
        page.get_by_role("tab", name="Reports").click()
        page.locator("#report_text table").wait_for(timeout=30_000)
        _loaded(page, "#report_text img")
        intro = page.locator("#reports_intro").inner_text()
        text = page.locator("#report_text").inner_text()
        width = page.locator("#report_text img").first.evaluate("i => i.clientWidth")
    assert "83.4 ± 0.2" in text and "gallery" not in text and width >= 64
    assert "normlab reproduce pacs --budget cpu" in intro


@pytest.mark.browser
def test_browser_norms_lab_defaults_and_about(server, small_png):
    """Issue 35.3: "Compute statistics" with the preselected models (shipped multi-style model
    included) draws its plot, no internal error. Issue 35.6: About names the styles."""
    with _page(server, 1400, 900) as page:
        page.get_by_role("tab", name="Norms lab").click()
        page.locator("#fs_in input[type=file]").set_input_files(small_png)
        page.locator("#fs_in img").first.wait_for(timeout=30_000)
        page.locator("#fs_run").click()
        page.locator("#fs_plot img").first.wait_for(
            timeout=90_000)
        assert "internal error" not in _toasts(page) and not _badges(page, "#fs_plot")
        page.get_by_role("tab", name="About").click()
        about = page.locator("#about").inner_text()
    assert "style ?" not in about
    for name, e in weights.manifest().items():
        if e.get("styles"):
            assert f"{len(e['styles'])} styles ({', '.join(e['styles'])})" in about


@pytest.mark.browser
def test_browser_video_uses_the_chosen_style_and_uploads_cleanly(server):
    """Issue 35.1: the video follows the Style box of a multi-style model. Issue 35.2: uploading
    a video (or clearing it) raises no internal error and leaves no Error badge."""
    import numpy as np

    from stylize.video import read_clip, write_clip
    from test_ui_handlers import _jitter_frames, make_two_style_model

    tmp = server[2]
    model = make_two_style_model(tmp / "two-styles-video.safetensors")
    frames = _jitter_frames(3)
    clip = write_clip([np.asarray(f) for f in frames], tmp / "clip35.mp4", fps=12)
    with _page(server, 1400, 900) as page:
        _settings(page)
        page.locator("#st_upload input[type=file]").set_input_files(str(model))
        page.wait_for_function("() => document.querySelector('#st_style input')?.value"
                               " === 'stripes'", timeout=30_000)
        page.locator("#st_style input").first.click()
        page.get_by_role("option", name="dots", exact=True).click()
        page.wait_for_function("() => document.querySelector('#st_style input')?.value"
                               " === 'dots'", timeout=15_000)
        page.get_by_text("Video", exact=True).click()
        page.locator("#vid_in input[type=file]").set_input_files(str(clip))
        page.locator("#vid_in video").first.wait_for(timeout=30_000)
        page.wait_for_timeout(1000)
        assert not _badges(page, "#vid_out", "#vid_info") and "rror" not in _toasts(page)
        page.locator("#vid_run").click()
        page.locator("#vid_out video").first.wait_for(timeout=120_000)
        page.wait_for_function("() => document.querySelector('#vid_info').innerText"
                               ".includes('frames')", timeout=30_000)
        assert "rror" not in _toasts(page)
    out = sorted((server[1].output_dir / "video").glob("*/clip35-dots.mp4"),
                 key=lambda p: p.stat().st_mtime)
    assert out, "the video was not stylized with the chosen style (dots)"
    first = torch_pixels(read_clip(out[-1])[0][0])
    still = {s: torch_pixels(H.stylize(server[1], frames[0], None, str(model), style=s))
             for s in ("stripes", "dots")}
    assert (first - still["dots"]).abs().mean() < 0.8 * (first - still["stripes"]).abs().mean()


def torch_pixels(img):
    import numpy as np
    import torch

    return torch.from_numpy(np.asarray(img).astype("float32"))


@pytest.mark.browser
def test_browser_multi_style_model_and_bad_model_upload(server, small_png):
    """The tab opens on the shipped model with the most styles (Style, Blend with, Blend weight
    shown); a one-style model hides them. Issue 35.4: a bad model upload is one line in the info
    box with no Error badge on the controls; a good upload then says so on the model box and
    shows its styles; a blend stylizes."""
    from test_ui_handlers import make_two_style_model

    model = make_two_style_model(server[2] / "two-styles.safetensors")
    bad = server[2] / "bad.safetensors"
    bad.write_text("this is not a model")
    ids = ("#st_style", "#st_blend", "#st_mix")
    shipped_styles = max((e.get("styles", []) for e in weights.manifest().values()
                          if e.get("kind") == "stylize"), key=len, default=[])
    with _page(server, 1400, 900) as page:
        _settings(page)
        if shipped_styles:
            for sel in ids:
                page.locator(sel).wait_for(state="visible", timeout=30_000)
            assert page.locator("#st_style input").first.input_value() == shipped_styles[0]
        page.locator("#st_model input").first.click()
        page.get_by_role("option", name="tiny-in (trained here)", exact=True).click()
        for sel in ids:
            page.locator(sel).wait_for(state="hidden", timeout=30_000)
        page.locator("#st_upload input[type=file]").set_input_files(str(bad))
        page.wait_for_function("() => document.querySelector('#st_info').innerText"
                               ".includes('⚠')", timeout=30_000)
        assert not _badges(page, "#st_info", "#st_model", "#st_style", "#st_blend")
        assert str(server[2]) not in page.locator("#st_info").inner_text()
        page.locator("#st_upload button[aria-label='Clear']").first.click()
        page.locator("#st_upload input[type=file]").set_input_files(str(model))
        for sel in ids:
            page.locator(sel).wait_for(state="visible", timeout=30_000)
        assert "two-styles.safetensors" in page.locator("#st_model").inner_text()
        assert not _badges(page, "#st_info", "#st_model", "#st_style", "#st_blend")
        assert page.locator("#st_style input").first.input_value() == "stripes"
        blend = page.locator("#st_blend input").first
        assert blend.input_value() == "none"
        assert float(page.locator("#st_mix input[type=range]").input_value()) == 0.5
        blend.click()
        options = page.get_by_role("option")
        options.first.wait_for(timeout=15_000)
        texts = [t.replace("✓", "").strip() for t in options.all_inner_texts()]
        assert texts == ["none", "stripes", "dots"]
        page.get_by_role("option", name="dots", exact=True).click()
        page.wait_for_function("() => document.querySelector('#st_blend input').value"
                               " === 'dots'", timeout=15_000)
        page.locator("#st_in input[type=file]").set_input_files(small_png)
        page.locator("#st_in img").first.wait_for(timeout=30_000)
        page.locator("#st_run").click()
        page.wait_for_function(
            "() => { const i = document.querySelector('#st_out img'); return i && i.complete"
            " && i.naturalWidth > 0 && decodeURIComponent(i.src).includes('stripes50-dots50'); }",
            timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "ui_stylize_blend.png"), full_page=True)
        assert "rror" not in _toasts(page)


@pytest.mark.browser
def test_browser_reload_reattaches_to_a_running_training(server):
    """Issue 35.5. A training keeps running when the page is reloaded; the reloaded page says so
    on the Stylize tab, its form shows the run's values (not the defaults), Cancel says
    "cancelling…" at once, a second Cancel keeps the result, and a bad number names its field in
    the status line without an Error badge."""
    with _page(server, 1400, 900) as page:
        page.get_by_role("tab", name="Train a classifier").click()
        page.locator("#tc_estimate").get_by_text("about").wait_for(timeout=30_000)
        page.locator("#tc_epochs input").fill("500")
        page.locator("#tc_subset input").fill("0")
        page.locator("#tc_batch input").fill("4")  # 1,500 steps: still running after the reload
        page.locator("#tc_start").click()
        page.wait_for_function("() => /epoch \\d+\\/500/.test(document.querySelector("
                               "'#tc_status').innerText)", timeout=90_000)
        assert "elapsed" in page.locator("#tc_status").inner_text()
        page.reload(wait_until="domcontentloaded")
        page.locator("#st_run").wait_for(timeout=60_000)
        page.locator("#nl_banner").get_by_text("classifier training is running").wait_for(
            timeout=30_000)
        page.get_by_role("tab", name="Train a classifier").click()
        page.wait_for_function("() => /epoch \\d+\\/500/.test(document.querySelector("
                               "'#tc_status').innerText)", timeout=60_000)
        assert page.locator("#tc_epochs input").input_value() == "500"
        assert page.locator("#tc_batch input").input_value() == "4"
        assert page.locator("#tc_subset input").input_value() == "0"
        # the run stops after its current step (milliseconds here), so "cancelling…" may show
        # for a moment only: record every text the status takes and look for it there
        page.evaluate("""() => { const el = document.querySelector('#tc_status');
            window.__tcSeen = [el.innerText];
            new MutationObserver(() => window.__tcSeen.push(el.innerText)).observe(
                el, {subtree: true, childList: true, characterData: true}); }""")
        page.locator("#tc_cancel").click()
        page.wait_for_function("() => window.__tcSeen.some(t => t.includes('cancelling…'))",
                               timeout=5_000)
        page.wait_for_function("() => document.querySelector('#tc_status').innerText"
                               ".includes('Cancelled')", timeout=90_000)
        page.locator("#tc_cancel").click()  # nothing runs: the last result stays
        page.get_by_text("Nothing is training").first.wait_for(timeout=15_000)
        assert "Cancelled" in page.locator("#tc_status").inner_text()
        page.locator("#tc_epochs input").fill("0")
        page.locator("#tc_start").click()
        page.locator("#tc_status").get_by_text("Epochs must be at least 1, got 0").wait_for(
            timeout=30_000)
        assert "Cancelled" not in page.locator("#tc_status").inner_text()
        assert not _badges(page, "#tc_status")
        page.screenshot(path=str(ARTIFACTS / "ui_train_classifier_1400x900.png"))


@pytest.mark.browser
def test_browser_phone_tabs_wrap_and_captions_are_whole(server):
    """Issue 35.11: on a 390×844 phone all seven main tabs show (wrapped, no "…" overflow menu)
    and each one opens. The style thumbnails' captions are whole (wrapped), not cut to "candy ·
    fou…"."""
    gallery = H.style_gallery(server[1])
    with _page(server, 1400, 900) as page:
        page.wait_for_function("n => document.querySelectorAll('#st_gallery .caption-label')"
                               ".length === n", arg=len(gallery), timeout=30_000)
        captions = page.locator("#st_gallery .caption-label")
        cut = captions.evaluate_all("els => els.filter(e => e.scrollWidth > e.clientWidth + 1"
                                    " || getComputedStyle(e).textOverflow === 'ellipsis')"
                                    ".map(e => e.innerText)")
        assert not cut, cut
        assert sorted(captions.all_inner_texts()) == sorted(g[1] for g in gallery)
        page.set_viewport_size({"width": 390, "height": 844})
        page.wait_for_timeout(800)
        tabs = page.get_by_role("tab")
        names = ["Stylize", "Train a style", "Classify", "Train a classifier", "Norms lab",
                 "Reports", "About"]
        assert tabs.all_inner_texts() == names
        assert all(t.is_visible() for t in tabs.all())
        more = page.locator("[aria-label='More tabs']")
        assert more.count() == 0 or not more.first.is_visible()
        for t in tabs.all():
            box = t.bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (t.inner_text(), box)
        rows = {round(t.bounding_box()["y"]) for t in tabs.all()}
        assert len(rows) <= 2, rows  # compact: two rows at most
        # every style thumbnail is on the screen (rows of 3), none scrolled off to the right
        thumbs = page.locator("#st_gallery .thumbnail-item")
        for i in range(thumbs.count()):
            box = thumbs.nth(i).bounding_box()
            assert box["x"] >= 0 and box["x"] + box["width"] <= 390, (i, box)
        assert not captions.evaluate_all("els => els.filter(e => e.scrollWidth > e.clientWidth"
                                         " + 1).map(e => e.innerText)")
        page.screenshot(path=str(ARTIFACTS / "ui_stylize_phone_tabs.png"))
        page.get_by_role("tab", name="About").click()
        page.locator("#about").wait_for(state="visible", timeout=15_000)


@pytest.mark.browser
def test_browser_one_point_curve_is_a_number_card(server):
    """Issue 35.9: a one-epoch training has one test accuracy: the curve's place shows a card
    with the number (a line through one point would be an empty frame); curves with more
    points are plots."""
    with _page(server, 1400, 900) as page:
        page.get_by_role("tab", name="Train a classifier").click()
        page.locator("#tc_estimate").get_by_text("about").wait_for(timeout=30_000)
        page.locator("#tc_epochs input").fill("1")
        page.locator("#tc_subset input").fill("0")
        page.locator("#tc_batch input").fill("4")
        page.locator("#tc_start").click()
        page.wait_for_function("() => document.querySelector('#tc_status').innerText"
                               ".includes('Finished')", timeout=180_000)
        status = page.locator("#tc_status").inner_text()
        card = page.locator("#tc_test_plot_card")
        card.wait_for(state="visible", timeout=15_000)
        text = card.inner_text()
        acc = status.split("test accuracy ")[1].split(" %")[0]
        assert "Test accuracy" in text and f"{acc} %" in text and "epoch 1" in text, text
        plot = page.locator("#tc_test_plot")
        assert plot.count() == 0 or not plot.first.is_visible()
        # the training loss has a point per step (3 steps): a plot, no card
        page.locator("#tc_loss_plot").wait_for(state="visible", timeout=15_000)
        loss_card = page.locator("#tc_loss_plot_card")
        assert loss_card.count() == 0 or not loss_card.first.is_visible()
        page.screenshot(path=str(ARTIFACTS / "ui_train_classifier_one_epoch.png"))


@pytest.mark.browser
def test_browser_compare_defaults_differ_in_norm_and_name_each_cell(server, small_png):
    """Issue 35.11: "Compare norms" opens on models that differ in norm, and the caption under
    the grid names the model, style and norm of every cell."""
    with _page(server, 1400, 900) as page:
        page.get_by_text("Compare norms: the same image through several models").click()
        page.locator("#cmp_models").wait_for(state="visible", timeout=15_000)
        chips = [c.replace("×", "").strip() for c in
                 page.locator("#cmp_models .token").all_inner_texts()]
        by_label = {lab: v for lab, v in H.model_choices(server[1], "stylize")}
        chosen = [by_label[c] for c in chips]
        norms_of = [H.model_norm(server[1], "stylize", v) for v in chosen]
        assert len(chosen) >= 2 and len(set(norms_of[:2])) == 2, (chips, norms_of)
        page.locator("#st_in input[type=file]").set_input_files(small_png)
        page.locator("#st_in img").first.wait_for(timeout=30_000)
        page.get_by_role("button", name="Compare", exact=True).click()
        _loaded(page, "#cmp_out img", timeout=120_000)
        page.locator("#cmp_caption").get_by_text("Left to right").wait_for(timeout=30_000)
        caption = page.locator("#cmp_caption").inner_text()
        for v in chosen:
            model = H.load_style(server[1], v)
            assert f"{v.removeprefix('ui:')} · {H.style_label(model, None)} · " \
                   f"{model.config.norm}" in caption, caption
        assert "rror" not in _toasts(page)


@pytest.mark.browser
def test_browser_any_painting_result_errors_and_download_name(server):
    """The "Any painting" accordion: a photo and a painting give the result at the photo's size
    (processed at 512 px), named after both; no painting is one visible line."""
    photo = need_shared("data", "content", "adain_avril.jpg")
    painting = need_shared("data", "styles", "the_scream.jpg")
    if server[1].vgg_weights is None:
        pytest.skip("no VGG encoder file")
    with _page(server, 1400, 900) as page:
        page.locator("#st_in input[type=file]").set_input_files(str(photo))
        page.locator("#st_in img").first.wait_for(timeout=30_000)
        page.get_by_text("Any painting: upload your own style image").click()
        page.locator("#st_any_run").wait_for(state="visible", timeout=15_000)
        assert page.locator("#st_any_size input[type=number]").input_value() == "512"
        page.locator("#st_any_run").click()  # no painting yet
        page.get_by_text("upload a painting").first.wait_for(timeout=30_000)
        toast = _toasts(page)
        assert "upload a painting" in toast and "Traceback" not in toast
        lines = [t for t in toast.split("\n") if t.strip() not in {"", "×", "Error"}]
        assert len(lines) == 1, lines  # the toast's title and close button, and one line
        page.locator("#st_painting input[type=file]").set_input_files(str(painting))
        page.locator("#st_painting img").first.wait_for(timeout=30_000)
        method = page.locator("#st_method input:checked").first.input_value()
        page.locator("#st_any_run").click()
        # the result box (at the top of the tab) comes into view with its progress
        page.wait_for_function("() => { const r = document.querySelector('#st_out')"
                               ".getBoundingClientRect(); return r.top > -5 && r.top < 300; }",
                               timeout=15_000)
        page.wait_for_function(
            "w => { const i = document.querySelector('#st_out img'); return i && i.complete &&"
            " i.naturalWidth > 0 && decodeURIComponent(i.src).endsWith(w); }",
            arg=f"adain_avril-the_scream-{method}.png", timeout=240_000)
        size = page.locator("#st_out img").first.evaluate(
            "img => [img.naturalWidth, img.naturalHeight]")
        page.screenshot(path=str(ARTIFACTS / "ui_any_painting.png"))
    assert tuple(size) == _size(photo)


@pytest.mark.browser
def test_browser_divergence_panel_follows_the_layer_slider(server):
    """Issue 35.9: the divergence analysis as a panel: classifiers, a dataset (by name) and two
    domains → divergence by depth; the layer slider then redraws the layer chart and table from
    the kept result (no recomputation)."""
    from test_ui_handlers import make_classifier

    cfg, tmp = server[1], server[2]
    for norm in ("bn", "in"):
        if f"ab-{norm}" not in cfg.registry.names("classify"):
            cfg.registry.add("classify", f"ab-{norm}", make_classifier(
                tmp / f"ab-{norm}.safetensors", norm, classes=("a", "b")))
    with _page(server, 1400, 900) as page:
        page.get_by_role("tab", name="Norms lab").click()
        page.locator("#dv_run").scroll_into_view_if_needed()
        assert page.locator("#dv_a input").first.input_value() == "test"
        assert page.locator("#dv_b input").first.input_value() == "shift:grayscale"
        assert "images" in page.locator("#dv_data input").first.input_value()
        page.locator("#dv_models .remove-all").first.click()
        for label in ("ab-bn (trained here)", "ab-in (trained here)"):
            page.locator("#dv_models input").first.click()
            page.get_by_role("option", name=label, exact=True).click()
        page.locator("#dv_run").click()
        _loaded(page, "#dv_plot img", timeout=120_000)
        _loaded(page, "#dv_layer_plot img", timeout=60_000)
        first = page.locator("#dv_table").inner_text()
        assert "ab-bn" in first and "bn1 (1/10)" in first
        before = page.locator("#dv_layer_plot img").first.get_attribute("src")
        depth = page.locator("#dv_depth input[type=number]")
        depth.fill("1")
        depth.press("Enter")
        page.wait_for_function("() => document.querySelector('#dv_table').innerText"
                               ".includes('(10/10)')", timeout=60_000)
        page.wait_for_function("s => { const i = document.querySelector('#dv_layer_plot img');"
                               " return i && i.src !== s && i.complete; }", arg=before,
                               timeout=60_000)
        assert "rror" not in _toasts(page)
        page.screenshot(path=str(ARTIFACTS / "ui_divergence.png"), full_page=True)


@pytest.mark.browser
def test_browser_pickers_on_the_shared_data(tmp_path):
    """Issue 35.11 on the real folders: datasets and content folders by name with image counts
    (no server paths, no CIFAR class folders); the PACS domain fields show only when PACS is
    chosen; the divergence panel offers PACS's domains by name."""
    from ui import launch
    from ui.config import UIConfig

    data = [need_shared("data", d) for d in ("cifar10", "pacs", "content")]
    cfg = UIConfig(allowed_dirs=data, runs_dir=tmp_path / "runs", device="cpu",
                   reports_dir=tmp_path / "reports", output_dir=tmp_path / "out")
    port = free_port()
    demo = launch(cfg, port=port, prevent_thread_lock=True, quiet=True)
    try:
        with _page([f"http://127.0.0.1:{port}/"], 1400, 900) as page:
            page.get_by_role("tab", name="Train a style").click()
            page.locator("#ts_content input").first.click()
            content = [o.replace("✓", "").strip()
                       for o in page.get_by_role("option").all_inner_texts()]
            page.keyboard.press("Escape")
            page.get_by_role("tab", name="Train a classifier").click()
            assert "cifar10 — 10 classes" in page.locator("#tc_data input").first.input_value()
            assert not page.locator("#tc_train_dom").is_visible()
            page.locator("#tc_data input").first.click()
            options = [o.replace("✓", "").strip()
                       for o in page.get_by_role("option").all_inner_texts()]
            pacs = next(o for o in options if o.startswith("pacs"))
            page.get_by_role("option", name=pacs).click()
            page.locator("#tc_train_dom").wait_for(state="visible", timeout=15_000)
            assert page.locator("#tc_test_dom textarea, #tc_test_dom input").first \
                .input_value() == "sketch"
            page.screenshot(path=str(ARTIFACTS / "ui_train_classifier_pacs.png"))
            page.get_by_role("tab", name="Norms lab").click()
            page.locator("#dv_data input").first.click()
            page.get_by_role("option", name=pacs).click()
            page.wait_for_function("() => document.querySelector('#dv_a input').value === 'photo'"
                                   " && document.querySelector('#dv_b input').value === 'sketch'",
                                   timeout=15_000)
    finally:
        demo.close()
    assert any(o.startswith("content (") and o.endswith(" images)") for o in content), content
    assert not any("/" in o.split(" (")[0] or o.startswith(("airplane", "cat", "dog"))
                   for o in content), content  # names, not paths or CIFAR class folders
    assert len(options) == 2 and all("images" in o and "/" not in o for o in options), options
    assert "art_painting" in pacs and "sketch" in pacs
