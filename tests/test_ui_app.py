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
                     "/cancel_classifier", "/report"}


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
    shifted, table = client.predict(handle_file(small_png), ["ui:r20-bn", "ui:r20-bin"],
                                    "brightness", 0.5, api_name="/shift_explorer")
    assert _size(shifted) == (36, 28) and "ui:r20-bin" in table


def test_norms_lab_endpoints(client, small_png):
    from gradio_client import handle_file

    plot, table = client.predict("stylize:ui:tiny-bin", api_name="/gates")
    assert plot is not None and "mean ρ" in table
    shifted, plot = client.predict(handle_file(small_png), ["classify:ui:r20-in",
                                                            "classify:ui:r20-bn"],
                                   0.5, "contrast", 0.5, api_name="/feature_stats")
    assert _size(shifted) == (36, 28) and plot is not None


def test_report_endpoint_serves_the_report_and_its_figures(client):
    md, gallery = client.predict("bin-cifar", api_name="/report")
    assert "| bn | 3 |" in md and "figure 1 in the gallery below" in md
    assert len(gallery) == 1 and _size(gallery[0]["image"]) == (64, 48)
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
    assert client.predict(api_name="/cancel_classifier") == "Nothing is training."


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
    assert client.predict(api_name="/cancel_style") == "Nothing is training."


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


@pytest.mark.browser
def test_browser_stylize_roundtrip(server, small_png):
    sync_playwright = _browser()
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(server[0], wait_until="domcontentloaded")
            page.locator("#st_run").wait_for(timeout=60_000)
            page.locator("#st_run").click()  # no image yet: a one-line gr.Error toast
            page.get_by_text("upload an image first").first.wait_for(timeout=30_000)
            page.locator("#st_in input[type=file]").set_input_files(small_png)
            page.locator("#st_in img").first.wait_for(timeout=30_000)
            page.locator("#st_run").click()
            out = page.locator("#st_out img").first
            out.wait_for(timeout=60_000)
            page.wait_for_function(
                "() => { const i = document.querySelector('#st_out img');"
                " return i && i.complete && i.naturalWidth > 0; }", timeout=30_000)
            size = out.evaluate("img => [img.naturalWidth, img.naturalHeight]")
            page.screenshot(path=str(ARTIFACTS / "ui_stylize_roundtrip.png"), full_page=True)
        finally:
            browser.close()
    assert tuple(size) == _size(small_png)


def _chromium(p):
    exe = CHROMIUM if Path(CHROMIUM).exists() else shutil.which("chromium")
    return p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)


@contextlib.contextmanager
def _page(server, width: int = 1280, height: int = 900):
    """A Chromium page on the app, loaded (the Stylize button is up); closed afterwards."""
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


@pytest.mark.browser
def test_browser_layout_gate_and_clean_upload_errors(server, small_png):
    """At 1400×900: Stylize button and Result above the fold; the gate slider is disabled until
    'Override' is ticked; a non-image named .jpg gives one message with no server path."""
    sync_playwright = _browser()
    fake = server[2] / "fake.jpg"
    fake.write_bytes(b"GIF89a? no, just text" * 30)
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(server[0], wait_until="domcontentloaded")
            page.locator("#st_run").wait_for(timeout=60_000)
            for sel in ("#st_run", "#st_out"):
                box = page.locator(sel).bounding_box()
                assert box["y"] + min(box["height"], 120) <= 900, (sel, box)
            gate_on = page.locator("#st_gate_on input[type=checkbox]")
            gate_on.wait_for(timeout=30_000)  # the first model (BIN) shows the gate row
            slider = page.locator("#st_gate input[type=range]")
            assert slider.is_disabled()
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
            # a new image clears the failed prediction: no stale "Error" badge stays on it
            page.locator("#cl_in input[type=file]").set_input_files(small_png)
            page.wait_for_function("() => !document.querySelector('#cl_out').innerText"
                                   ".includes('Error')", timeout=30_000)
            page.locator("#cl_run").click()
            page.locator("#cl_view img").first.wait_for(timeout=60_000)
            assert "Error" not in page.locator("#cl_out").inner_text()
            page.screenshot(path=str(ARTIFACTS / "ui_layout_1400x900.png"))
        finally:
            browser.close()


@pytest.mark.browser
def test_browser_reports_tab_shows_the_report_with_its_figure(server):
    with _page(server) as page:
        page.get_by_role("tab", name="Reports").click()
        page.locator("#report_text table").wait_for(timeout=30_000)
        page.wait_for_function(
            "() => { const i = document.querySelector('#report_figures img');"
            " return i && i.complete && i.naturalWidth > 0; }", timeout=30_000)
        intro = page.locator("#reports_intro").inner_text()
        text = page.locator("#report_text").inner_text()
    assert "83.4 ± 0.2" in text and "figure 1 in the gallery below" in text
    assert "normlab reproduce pacs --budget cpu" in intro


@pytest.mark.browser
def test_browser_multi_style_model_shows_blend_controls(server, small_png):
    """The tab opens on the shipped model with the most styles (Style, Blend with and Blend weight
    shown when it has several); a one-style model hides the three; an uploaded two-style model
    shows them (Style = its first style, Blend with = none, weight 0.5), and a blend with the
    second style stylizes."""
    from test_ui_handlers import make_two_style_model

    sync_playwright = _browser()
    model = make_two_style_model(server[2] / "two-styles.safetensors")
    ARTIFACTS.mkdir(exist_ok=True)
    ids = ("#st_style", "#st_blend", "#st_mix")
    shipped_styles = max((e.get("styles", []) for e in weights.manifest().values()
                          if e.get("kind") == "stylize"), key=len, default=[])
    with sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(server[0], wait_until="domcontentloaded")
            page.locator("#st_run").wait_for(timeout=60_000)
            if shipped_styles:  # the tab opens on the shipped multi-style model
                for sel in ids:
                    page.locator(sel).wait_for(state="visible", timeout=30_000)
                assert page.locator("#st_style input").first.input_value() == shipped_styles[0]
            page.locator("#st_model input").first.click()  # a one-style model hides them
            page.get_by_role("option", name="tiny-in (trained here)", exact=True).click()
            for sel in ids:
                page.locator(sel).wait_for(state="hidden", timeout=30_000)
            page.get_by_text("Upload your own style model").click()
            page.locator("#st_upload input[type=file]").set_input_files(str(model))
            for sel in ids:
                page.locator(sel).wait_for(state="visible", timeout=30_000)
            assert page.locator("#st_style input").first.input_value() == "stripes"
            blend = page.locator("#st_blend input").first
            assert blend.input_value() == "none"
            assert float(page.locator("#st_mix input[type=range]").input_value()) == 0.5
            blend.click()
            options = page.get_by_role("option")
            options.first.wait_for(timeout=15_000)
            texts = [t.replace("✓", "").strip() for t in options.all_inner_texts()]
            assert texts == ["none", "stripes", "dots"]  # ✓ marks the selected one
            page.get_by_role("option", name="dots", exact=True).click()
            page.wait_for_function("() => document.querySelector('#st_blend input').value"
                                   " === 'dots'", timeout=15_000)
            page.locator("#st_in input[type=file]").set_input_files(small_png)
            page.locator("#st_in img").first.wait_for(timeout=30_000)
            page.locator("#st_run").click()
            page.wait_for_function(
                "() => { const i = document.querySelector('#st_out img');"
                " return i && i.complete && i.naturalWidth > 0; }", timeout=60_000)
            size = page.locator("#st_out img").first.evaluate(
                "img => [img.naturalWidth, img.naturalHeight]")
            page.screenshot(path=str(ARTIFACTS / "ui_stylize_blend.png"), full_page=True)
            assert "rror" not in _toasts(page)
        finally:
            browser.close()
    assert tuple(size) == _size(small_png)


@pytest.mark.browser
def test_browser_reload_reattaches_to_a_running_training(server):
    """A training started in one page keeps running when the page is reloaded; the new page
    shows its progress and its Cancel works."""
    sync_playwright = _browser()
    with sync_playwright() as p:
        browser = _chromium(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(server[0], wait_until="domcontentloaded")
            page.get_by_role("tab", name="Train a classifier").click()
            epochs = page.locator("#tc_epochs input")
            epochs.fill("300")
            page.locator("#tc_subset input").fill("0")
            page.locator("#tc_start").click()
            status = page.locator("#tc_status")
            page.wait_for_function("() => /epoch \\d+\\/300/.test(document.querySelector("
                                   "'#tc_status').innerText)", timeout=90_000)
            assert "elapsed" in status.inner_text()
            page.reload(wait_until="domcontentloaded")
            page.get_by_role("tab", name="Train a classifier").click()
            page.wait_for_function("() => /epoch \\d+\\/300/.test(document.querySelector("
                                   "'#tc_status').innerText)", timeout=60_000)
            page.locator("#tc_cancel").click()
            page.wait_for_function("() => document.querySelector('#tc_status').innerText"
                                   ".includes('Cancelled')", timeout=90_000)
        finally:
            browser.close()
