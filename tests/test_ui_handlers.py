"""UI handlers, called directly (no server): they are plain functions over the libraries."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import weights
from conftest import ROOT, need_shared
from ui import handlers as H
from ui import training as T
from ui.config import UIConfig, default_vgg_weights


# ----------------------------------------------------------------------------- tiny fixtures
# (also used by tests/test_ui_app.py)

def gradient_image(w: int, h: int, seed: int = 0) -> Image.Image:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, h, w, generator=g) * 255
    return Image.fromarray(x.permute(1, 2, 0).to(torch.uint8).numpy(), "RGB")


def pixels(img: Image.Image) -> torch.Tensor:
    return torch.from_numpy(__import__("numpy").asarray(img).copy()).float()


def make_style_model(path: Path, norm: str) -> Path:
    """An untrained, small TransformerNet saved with stylize's own save function."""
    import stylize
    from stylize.train import save_model

    net = stylize.TransformerNet(config=stylize.StyleConfig(norm, base_channels=8, num_residual=1))
    if norm == "bin":  # learned-looking gates, so overriding them changes the output
        with torch.no_grad():
            for _, g in __import__("norms").iter_gates(net):
                g.uniform_(0.2, 0.8)
    meta = {"kind": "stylize", "config": net.config.to_dict(), "style": "tiny", "steps": 0,
            "finished": True, "final_losses": {}}
    return save_model(path, net.eval(), meta)


def make_classifier(path: Path, norm: str, classes=("cat", "dog", "ship")) -> Path:
    """An untrained resnet20 classifier saved with classify's own save function."""
    import classify
    from classify.checkpoint import save_classifier

    model = classify.create_model("resnet20", num_classes=len(classes), norm=norm).eval()
    return save_classifier(path, model, class_names=list(classes), mean=[0.5, 0.5, 0.5],
                           std=[0.25, 0.25, 0.25], image_size=32)


def make_image_folder(root: Path, classes=("a", "b"), per_class: int = 6, size: int = 32) -> Path:
    for ci, c in enumerate(classes):
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            gradient_image(size, size, seed=100 * ci + i).save(root / c / f"{i}.png")
    return root


def make_report(reports: Path, name: str = "bin-cifar") -> Path:
    """A written report: README.md with one figure of its own, one pointing outside its folder
    (never shown), and the PNG."""
    folder = reports / name
    folder.mkdir(parents=True, exist_ok=True)
    gradient_image(64, 48).save(folder / "fig1_curves.png")
    gradient_image(8, 8).save(reports / "secret.png")
    (folder / "README.md").write_text(
        "# BIN on CIFAR-10\n\n| norm | n | ResNet-20 |\n|---|---:|---:|\n| bn | 3 | 83.4 ± 0.2 |\n\n"
        "![Fig. 1: test top-1 by epoch](fig1_curves.png)\n\n![outside](../secret.png)\n",
        encoding="utf-8")
    return folder


def make_ui_config(tmp: Path, with_models: bool = True) -> UIConfig:
    """A UIConfig over tmp folders: a content folder, a train/test dataset, and (optionally)
    tiny style models (bin, in) and classifiers (bn, in, bin) registered as UI-trained."""
    content = make_image_folder(tmp / "content", classes=("x",), per_class=4, size=48)
    data = tmp / "data" / "tiny"
    make_image_folder(data / "train", per_class=6)
    make_image_folder(data / "test", per_class=2)
    make_report(tmp / "reports")
    cfg = UIConfig(allowed_dirs=[content, tmp / "data"], runs_dir=tmp / "runs", device="cpu",
                   vgg_weights=default_vgg_weights(), reports_dir=tmp / "reports")
    if with_models:
        (tmp / "models").mkdir(exist_ok=True)
        for norm in ("bin", "in"):
            cfg.registry.add("stylize", f"tiny-{norm}",
                             make_style_model(tmp / "models" / f"style-{norm}.safetensors", norm))
        for norm in ("bn", "in", "bin"):
            cfg.registry.add("classify", f"r20-{norm}",
                             make_classifier(tmp / "models" / f"clf-{norm}.safetensors", norm))
    return cfg


@pytest.fixture(scope="module")
def cfg(tmp_path_factory) -> UIConfig:
    return make_ui_config(tmp_path_factory.mktemp("ui"))


# ----------------------------------------------------------------------------- model lists

def test_model_choices_list_registered_models(cfg):
    values = [v for _, v in H.model_choices(cfg, "stylize")]
    assert "ui:tiny-bin" in values and "ui:tiny-in" in values
    clf = [v for _, v in H.model_choices(cfg, "classify")]
    assert {"ui:r20-bn", "ui:r20-in", "ui:r20-bin"} <= set(clf)
    lab = [v for _, v in H.lab_choices(cfg)]
    assert "stylize:ui:tiny-bin" in lab and "classify:ui:r20-bn" in lab


def test_registry_survives_restart_and_names_are_unique(cfg, tmp_path):
    again = UIConfig(allowed_dirs=cfg.allowed_dirs, runs_dir=cfg.runs_dir)
    assert again.registry.names("stylize") == cfg.registry.names("stylize")
    p = make_style_model(tmp_path / "m.safetensors", "in")
    reg = UIConfig(allowed_dirs=[], runs_dir=tmp_path / "r").registry
    assert reg.add("stylize", "same", p) == "same"
    assert reg.add("stylize", "same", p) == "same-2"


def test_unknown_model_is_a_clear_error(cfg):
    with pytest.raises(ValueError, match="unknown stylize model 'ui:nope'"):
        H.resolve_spec(cfg, "stylize", "ui:nope")
    with pytest.raises(ValueError, match="unknown classify model 'passwd'") as err:
        H.resolve_spec(cfg, "classify", "/etc/passwd")
    assert "/etc" not in str(err.value)  # server paths are never echoed
    with pytest.raises(ValueError, match="pick a style model"):
        H.resolve_spec(cfg, "stylize", None)


# ----------------------------------------------------------------------------- stylize

@pytest.mark.parametrize("size", [(37, 23), (64, 48)])
def test_stylize_keeps_the_input_size(cfg, size):
    out = H.stylize(cfg, gradient_image(*size), "ui:tiny-in")
    assert isinstance(out, Image.Image) and out.size == size and out.mode == "RGB"


def test_stylize_options_change_the_output(cfg):
    img = gradient_image(40, 32)
    base = pixels(H.stylize(cfg, img, "ui:tiny-bin"))
    weak = pixels(H.stylize(cfg, img, "ui:tiny-bin", strength=0.0))
    to_in = pixels(H.stylize(cfg, img, "ui:tiny-bin", gate=-1.0))
    assert (weak - pixels(img)).abs().mean() < (base - pixels(img)).abs().mean()  # ≈ the input
    assert not torch.equal(to_in, base)  # the gate override changes what the net does
    assert torch.equal(pixels(H.stylize(cfg, img, "ui:tiny-bin")), base)  # ... and does not stick


def test_stylize_rejects_bad_input(cfg, tmp_path):
    with pytest.raises(ValueError, match="upload an image"):
        H.stylize(cfg, None, "ui:tiny-in")
    small = UIConfig(allowed_dirs=[], runs_dir=cfg.runs_dir, max_pixels=1000)
    with pytest.raises(ValueError, match=r"^40×40 \(0.0016 MP\) is larger than this server's "
                                         r"limit of 0.001 MP; resize it or raise --memory-budget"):
        H.stylize(small, gradient_image(40, 40), "ui:tiny-in")
    # an uploaded file over the limit gets the same line from its header, before any decoding
    big = tmp_path / "big.png"
    gradient_image(40, 40).save(big)
    with pytest.raises(ValueError, match=r"^40×40 \(0.0016 MP\) is larger"):
        H.check_image_size(small, str(big))
    assert H.check_image_size(cfg, str(big)) == ""
    bad = tmp_path / "x.txt"
    bad.write_text("no")
    with pytest.raises(ValueError, match=".safetensors or .pth"):
        H.stylize(cfg, gradient_image(8, 8), None, upload=str(bad))


def test_uploaded_model_file_wins(cfg):
    path = cfg.registry.path_of("stylize", "tiny-bin")
    a = H.stylize(cfg, gradient_image(24, 24), "ui:tiny-in", upload=str(path))
    b = H.stylize(cfg, gradient_image(24, 24), "ui:tiny-bin")
    assert torch.equal(pixels(a), pixels(b))


def test_model_info_reports_gates(cfg):
    text, gated = H.style_model_info(cfg, "ui:tiny-bin")
    assert gated and "mean ρ" in text and "bin" in text
    text, gated = H.style_model_info(cfg, "ui:tiny-in")
    assert not gated and "`in`" in text


def test_compare_makes_one_grid(cfg):
    grid = H.compare(cfg, gradient_image(32, 32), ["ui:tiny-bin", "ui:tiny-in"], max_size=128)
    assert grid.width >= 2 * 32
    with pytest.raises(ValueError, match="at least one"):
        H.compare(cfg, gradient_image(32, 32), [])


# ----------------------------------------------------------------------------- classify

def test_classify_topk(cfg):
    res = H.classify(cfg, gradient_image(32, 32), "ui:r20-bn", topk=2)
    assert len(res) == 2 and set(res) <= {"cat", "dog", "ship"}
    assert all(0 <= p <= 1 for p in res.values())


def test_shift_explorer_rows(cfg):
    names = H.shift_names()
    assert "brightness" in names
    shifted, rows = H.shift_explorer(cfg, gradient_image(32, 32), ["ui:r20-bn", "ui:r20-bin"],
                                     "brightness", 0.8)
    assert shifted.size == (32, 32)
    assert [r.norm for r in rows] == ["bn", "bin"]
    table = H.shift_table(rows)
    assert table.count("\n") == 3 and "r20-bin" in table


# ----------------------------------------------------------------------------- norms lab

def test_gate_histograms(cfg):
    fig, md = H.gate_histograms(cfg, "stylize:ui:tiny-bin")
    assert fig is not None and "mean ρ" in md
    fig, md = H.gate_histograms(cfg, "classify:ui:r20-bn")
    assert fig is None and "no BIN gates" in md


def test_feature_stats_of_a_style_model(cfg):
    shifted, stats = H.feature_stats(cfg, gradient_image(40, 30), ["stylize:ui:tiny-in"],
                                     depth=1.0, shift="contrast", strength=0.5)
    assert shifted.size == (40, 30) and stats[0].layer and len(stats[0].mean[0]) > 0


def test_feature_stats_in_removes_the_shift_bn_does_not(cfg):
    shifted, stats = H.feature_stats(cfg, gradient_image(32, 32), ["classify:ui:r20-in",
                                                                   "classify:ui:r20-bn"],
                                     depth=0.0, shift="brightness", strength=0.8)
    assert shifted.size == (32, 32)
    gap = {s.model: (torch.tensor(s.mean[0]) - torch.tensor(s.mean[1])).abs().mean().item()
           for s in stats}
    assert gap["classify:ui:r20-in"] < 1e-3 < gap["classify:ui:r20-bn"]
    fig = H.feature_figure(stats, "brightness")
    assert len(fig.axes) == 4


def divergence_config(tmp: Path) -> UIConfig:
    """A UI config whose tiny dataset (classes a, b) has two classifiers of its own (BN, IN)."""
    cfg = make_ui_config(tmp, with_models=False)
    for norm in ("bn", "in"):
        cfg.registry.add("classify", f"ab-{norm}",
                         make_classifier(tmp / f"ab-{norm}.safetensors", norm, classes=("a", "b")))
    return cfg


def test_divergence_by_depth_in_removes_the_stem_divergence(tmp_path):
    """Issue 35.9: the divergence panel's numbers. Under IN the stem's per-channel means are its
    β for every image, so test vs grayscale has no D(μ) there; under BN it does."""
    from ui import training as T

    cfg = divergence_config(tmp_path)
    data = T.dataset_dirs(cfg)[0][1]
    domains = H.divergence_domains(cfg, data)
    assert domains[0] == "test" and "shift:grayscale" in domains
    assert H.default_domains(domains) == ("test", "shift:grayscale")
    assert H.default_domains(["art_painting", "photo", "sketch"]) == ("photo", "sketch")
    divs = H.divergence(cfg, ["ui:ab-bn", "ui:ab-in"], data, "test", "shift:grayscale", 4)
    bn, inn = divs
    assert (bn.model, inn.model) == ("ab-bn", "ab-in") and bn.layers == inn.layers
    assert bn.layers[0] == "bn1" and len(bn.layers) == 10
    assert inn.total[0] < 1e-3 * bn.total[0] and bn.total[0] > 0.01
    assert [H.layer_at(bn, d) for d in (0, 0.5, 1)] == [0, 5, 9]
    table = H.divergence_table(divs, 1.0)
    assert f"| ab-bn | {bn.layers[-1]} (10/10) | {bn.total[-1]:.4f} |" in table
    assert len(H.divergence_figure(divs, 0.5).axes) == 2
    chart = H.divergence_layer_chart(divs, 0.0)
    assert len(chart.axes[0].patches) == 3 * 2  # three measures × two models
    assert "bn1" in chart.axes[0].get_xticklabels()[0].get_text()


def test_divergence_bad_input_is_one_line(tmp_path):
    from ui import training as T

    cfg = divergence_config(tmp_path)
    cfg.registry.add("classify", "r20-cats", make_classifier(tmp_path / "c.safetensors", "bn"))
    data = T.dataset_dirs(cfg)[0][1]
    cases = [(dict(domain_b="test"), "two different domains"),
             (dict(domain_b="shift:/etc/passwd"), "pick both domains"),
             (dict(data="folder:/etc,/etc"), "operator-allowed"),
             (dict(choices=[]), "at least one classifier"),
             (dict(limit=1), "between 2 and 5000"),
             (dict(choices=["ui:r20-cats"]), "classes")]
    for change, message in cases:
        args = dict(choices=["ui:ab-bn"], data=data, domain_a="test",
                    domain_b="shift:grayscale", limit=4) | change
        with pytest.raises(ValueError, match=message):
            H.divergence(cfg, **args)


def test_about_lists_every_norm():
    import norms

    md = H.about_markdown()
    for name in norms.NORM_NAMES:
        assert f"**{name}**" in md
    assert "1805.07925" in md and "1807.09441" in md


# ----------------------------------------------------------------------------- training

def test_job_cancel_stops_the_library_loop():
    job = T.Job()

    def fake_train(cfg, progress, should_stop):
        step = 0
        while not should_stop():
            step += 1
            progress({"step": step})
            time.sleep(0.01)
        return f"stopped at {step}"

    threading.Timer(0.2, job.cancel).start()
    events = list(job.run(fake_train, None))
    assert events[-1][0] == "done" and events[-1][1].startswith("stopped at")
    assert all(k == "progress" for k, _ in events[:-1]) and len(events) > 3


def test_job_reraises_library_errors():
    def broken(cfg, progress, should_stop):
        raise ValueError("loss became nan at step 3")

    with pytest.raises(ValueError, match="loss became nan"):
        list(T.Job().run(broken, None))


def test_server_folders_must_be_allowed(cfg, tmp_path):
    with pytest.raises(ValueError, match="not inside a folder the operator allowed"):
        cfg.check_allowed(tmp_path)
    with pytest.raises(ValueError, match="not inside a folder the operator allowed"):
        list(T.train_style(cfg, T.Job(), str(tmp_path / "s.png"), "/", "in", 32, 1))
    with pytest.raises(ValueError, match="not one of the operator-allowed datasets"):
        list(T.train_classifier(cfg, T.Job(), "resnet20", "bn", f"folder:{tmp_path}", 1))
    assert T.dataset_dirs(cfg)[0][1].startswith("folder:")
    offered = dict((v, label) for label, v in T.content_dirs(cfg))
    assert offered == {str(cfg.allowed_dirs[0]): "content (4 images)",  # not a dataset's classes
                       str(cfg.allowed_dirs[0] / "x"): "content/x (4 images)"}


def test_train_classifier_registers_the_model(tmp_path):
    cfg = make_ui_config(tmp_path, with_models=False)
    data = T.dataset_dirs(cfg)[0][1]
    fractions = []
    updates = list(T.train_classifier(cfg, T.Job(), "resnet20", "bin", data, 1, name="mine",
                                      batch_size=4, lr=0.05,
                                      on_progress=lambda f, d: fractions.append(f)))
    assert updates[-1].model_name == "mine" and "ui:mine" in updates[-1].status
    acc = [r["value"] for r in updates[-1].history if r["series"] == "test acc"][-1]
    assert f"test accuracy {acc:.1f} %" in updates[-1].status  # the final accuracy is reported
    assert fractions == sorted(fractions) and fractions[-1] == pytest.approx(1.0)
    series = {r["series"] for r in updates[-1].history}
    assert series == {"train loss", "train acc", "test acc"}
    assert "ui:mine" in [v for _, v in H.model_choices(cfg, "classify")]
    assert len(H.classify(cfg, gradient_image(32, 32), "ui:mine", topk=2)) == 2


@pytest.mark.parametrize("native", [True, False])
def test_train_classifier_autocasts_where_it_pays(tmp_path, monkeypatch, native):
    """On a CPU with native bf16 the UI trains under autocast (faster); elsewhere in float32."""
    import engine.devices as devices

    monkeypatch.setattr(devices, "cpu_native_bf16", lambda: native)
    seen = {}
    monkeypatch.setattr(T, "_classifier_updates",
                        lambda cfg, job, train, tcfg, *a: seen.setdefault("cfg", tcfg))
    cfg = make_ui_config(tmp_path, with_models=False)
    T.train_classifier(cfg, T.Job(), "resnet20", "bin", T.dataset_dirs(cfg)[0][1], 1)
    assert seen["cfg"].amp is native and seen["cfg"].device == "cpu"


def test_train_style_registers_the_model(tmp_path):
    need_shared("weights", "vgg19_normalised_relu3_1.pth")
    cfg = make_ui_config(tmp_path, with_models=False)
    style = tmp_path / "style.png"
    gradient_image(48, 48, seed=7).save(style)
    updates = list(T.train_style(cfg, T.Job(), str(style), T.content_dirs(cfg)[0][1], "bin", 32, 2,
                                 batch_size=2, preview_every=1))
    last = updates[-1]
    assert last.model_name == "style-bin" and last.preview is not None
    assert {r["series"] for r in last.history} == {"content", "style"}
    out = H.stylize(cfg, gradient_image(30, 20), "ui:style-bin")
    assert out.size == (30, 20)


# ----------------------------------------------------------------------------- command line

def test_cli_runs_without_gradio():
    code = ("import sys; sys.modules['gradio'] = None\n"
            "import main\n"
            "try:\n    main.app(['ui', '--allowed-dir', '.'])\n"
            "except SystemExit as e:\n    sys.exit(e.code)\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2 and "needs gradio" in r.stderr and "Traceback" not in r.stderr


def test_cli_passes_options_to_launch(monkeypatch, tmp_path):
    import main
    import ui

    from PIL import Image as PILImage

    seen = {}
    monkeypatch.setattr(ui, "launch", lambda cfg, **kw: seen.update(cfg=cfg, **kw))
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", PILImage.MAX_IMAGE_PIXELS)  # restored after
    r = CliRunner().invoke(main.app, ["--device", "cpu", "ui", "--port", "7999",
                                      "--allowed-dir", str(tmp_path),
                                      "--runs-dir", str(tmp_path / "runs"),
                                      "--reports-dir", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert seen["cfg"].reports_dir == tmp_path.resolve()
    assert seen["host"] == "127.0.0.1" and seen["port"] == 7999 and seen["share"] is False
    assert seen["cfg"].allowed_dirs == [tmp_path.resolve()] and seen["cfg"].device == "cpu"
    assert PILImage.MAX_IMAGE_PIXELS == seen["cfg"].max_pixels  # bombs refused while decoding


def test_cli_rejects_a_missing_folder(tmp_path):
    import main

    r = CliRunner().invoke(main.app, ["ui", "--allowed-dir", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "is not a folder" in r.output
    r = CliRunner().invoke(main.app, ["ui", "--reports-dir", str(tmp_path / "nope")])
    assert r.exit_code == 2 and "--reports-dir" in r.output and "is not a folder" in r.output


def test_plot_frames_are_typed_and_thinned():
    from ui.app import _frame

    rows = [{"x": float(i), "value": float(i) / 2, "series": "loss"} for i in range(1, 2001)]
    rows += [{"x": 1.0, "value": 9.0, "series": "acc"}]
    df = _frame(rows, "loss", max_points=600)
    assert len(df) <= 600 and df["x"].iloc[-1] == 2000.0 and df["x"].is_monotonic_increasing
    assert str(df["x"].dtype) == "float64" and str(df["value"].dtype) == "float64"
    empty = _frame([], "loss")
    assert len(empty) == 0 and str(empty["x"].dtype) == "float64"


# ----------------------------------------------------------------------------- hostile inputs

def crafted_style_model(path: Path, **config) -> Path:
    """A small .safetensors whose metadata claims a huge network (issue 9, item 1)."""
    from safetensors.torch import save_file

    import json

    meta = {"kind": json.dumps("stylize"), "config": json.dumps({"norm": "in", **config})}
    save_file({"conv1.conv2d.weight": torch.zeros(8, 3, 9, 9)}, str(path), metadata=meta)
    return path


@pytest.mark.parametrize("config", [{"num_residual": 10**9}, {"base_channels": 600}])
def test_uploaded_model_with_huge_config_is_refused_before_any_build(cfg, tmp_path, monkeypatch,
                                                                     config):
    import stylize.infer
    import stylize.model

    built = []

    class Refuse(stylize.model.TransformerNet):
        def __init__(self, *a, **k):  # records the build and refuses it: the test never allocates
            built.append(k.get("config"))
            raise MemoryError("the network would have been built")

    monkeypatch.setattr(stylize.model, "TransformerNet", Refuse)
    monkeypatch.setattr(stylize.infer, "TransformerNet", Refuse)
    bad = crafted_style_model(tmp_path / "huge.safetensors", **config)
    with pytest.raises(ValueError) as err:
        H.stylize(cfg, gradient_image(16, 16), None, upload=str(bad))
    assert built == [] and str(tmp_path) not in str(err.value)
    word = {"num_residual": "residual", "base_channels": "channels"}[next(iter(config))]
    assert word in str(err.value)  # the message names what is out of bounds


def test_processing_size_over_the_memory_budget_is_refused(cfg):
    small = UIConfig(allowed_dirs=[], runs_dir=cfg.runs_dir, memory_budget_mb=1)
    # the library stylizes in bounded memory (tiles) and refuses what cannot fit at all
    with pytest.raises(ValueError, match="memory"):
        H.stylize(small, gradient_image(64, 48), "ui:tiny-in", max_size=0)
    roomy = UIConfig(allowed_dirs=[], runs_dir=cfg.runs_dir, memory_budget_mb=512)
    assert H.stylize(roomy, gradient_image(640, 480), "ui:tiny-in", max_size=0).size == (640, 480)


def test_output_size_option(cfg):
    img = gradient_image(64, 40)
    assert H.stylize(cfg, img, "ui:tiny-in", max_size=32).size == (64, 40)
    assert H.stylize(cfg, img, "ui:tiny-in", max_size=32,
                     output_size="processing size").size == (32, 20)
    with pytest.raises(ValueError, match="output size must be one of"):
        H.stylize(cfg, img, "ui:tiny-in", output_size="huge")


@pytest.mark.parametrize("typed", ["style:/etc/shadow", "style:/no/such/model.pth",
                                   "style:" + str(ROOT / "weights" / "style_candy_bin.safetensors")])
def test_typed_shift_never_reaches_a_loader(cfg, monkeypatch, typed):
    import classify
    import stylize

    calls = []
    monkeypatch.setattr(stylize, "load_model", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(classify, "apply_shift", lambda *a, **k: calls.append(a))
    messages = set()
    for fn in (lambda: H.shift_explorer(cfg, gradient_image(32, 32), ["ui:r20-bn"], typed, 1.0),
               lambda: H.feature_stats(cfg, gradient_image(32, 32), ["classify:ui:r20-bn"], 0.0,
                                       typed, 1.0)):
        with pytest.raises(ValueError, match="unknown shift") as err:
            fn()
        messages.add(str(err.value))
    assert calls == [] and len(messages) == 1  # the same answer whether the file exists or not
    assert "/etc" not in messages.pop() and "/no/such" not in str(err.value)


def test_uploaded_non_image_is_a_clean_message(cfg, tmp_path):
    fake = tmp_path / "photo.jpg"
    fake.write_bytes(b"this is not a JPEG at all" * 10)
    for fn in (lambda: H.stylize(cfg, str(fake), "ui:tiny-in"),
               lambda: H.classify(cfg, str(fake), "ui:r20-bn")):
        with pytest.raises(ValueError, match="not an image this server can read") as err:
            fn()
        assert str(tmp_path) not in str(err.value) and "/" not in str(err.value)


def test_public_message_cuts_server_paths():
    msg = H.public_message("cannot read /tmp/gradio/ab12cd/upload.jpg: bad\nTraceback ...")
    assert msg == "cannot read upload.jpg: bad"
    assert H.public_message(r"no C:\Users\me\x.png here") == "no x.png here"
    assert H.public_message("plain text, 3/4 done") == "plain text, 3/4 done"


def test_classify_decodes_16_bit_png_with_the_shared_loader(cfg, tmp_path):
    import numpy as np

    arr = (np.linspace(0, 65535, 32 * 32).reshape(32, 32)).astype(np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(arr).save(p)
    assert Image.open(p).mode.startswith("I")
    _, view = H.classify_with_view(cfg, str(p), "ui:r20-bn", topk=1)
    mean = pixels(view).mean().item()
    assert 90 < mean < 165  # a mid-grey ramp, not 99.6 % white


def test_about_links_the_papers_and_lists_shipped_models():
    import weights

    md = H.about_markdown()
    assert "](https://arxiv.org/abs/1805.07925)" in md and "](https://arxiv.org/abs/1807.09441)" in md
    for name in weights.names():
        assert f"`{name}`" in md
    acc = [e["accuracy"] for e in weights.manifest().values() if "accuracy" in e]
    assert all(f"{a:.1f} %" in md for a in acc)


def test_reports_lists_written_reports_and_shows_only_their_own_figures(cfg):
    assert [n for _, n in H.report_choices(cfg)] == ["bin-cifar"]
    md, figs = H.report_view(cfg, "bin-cifar")
    assert "| bn | 3 | 83.4 ± 0.2 |" in md
    # the figure inline where the text puts it, served from the reports folder
    fig = (cfg.reports_dir / "bin-cifar" / "fig1_curves.png").as_posix()
    assert f"![Fig. 1: test top-1 by epoch](gradio_api/file={fig})" in md
    assert md.index("83.4") < md.index("fig1_curves.png") and "gallery" not in md
    assert "figure not found: outside" in md and "secret" not in md
    assert figs == [(str(cfg.reports_dir / "bin-cifar" / "fig1_curves.png"),
                     "Fig. 1: test top-1 by epoch")]
    for bad in ("pacs", "../reports/bin-cifar", None):  # unwritten, outside the list, nothing
        with pytest.raises(ValueError, match="pick one of the listed reports"):
            H.report_view(cfg, bad)
    missing = H.reports_missing_markdown(cfg)
    assert "`normlab reproduce pacs --budget cpu`" in missing and "reproduce bin-cifar" not in missing


def test_committed_reports_show_every_figure():
    """The reports in the repository render in the Reports tab with all their figures."""
    cfg = UIConfig(allowed_dirs=[], runs_dir=ROOT / "runs" / "ui")
    names = [n for _, n in H.report_choices(cfg)]
    assert cfg.reports_dir == ROOT / "reports" and "style-curves" in names
    for name in names:
        md, figs = H.report_view(cfg, name)
        assert "figure not found" not in md and figs, name
        assert all(Path(f).is_file() for f, _ in figs)


def test_classifier_note_names_the_cifar_classes(cfg):
    import classify

    note = H.classifier_note(cfg)
    if not classify.list_shipped():
        assert note == ""
        return
    assert "CIFAR-10" in note and "10 classes" in note and "airplane" in note


# ----------------------------------------------------------------------------- server-owned jobs

def _slow_updates(n: int, stop: threading.Event, dt: float = 0.02):
    for i in range(1, n + 1):
        if stop.is_set():
            yield T.TrainUpdate("Cancelled", fraction=i / n)
            return
        time.sleep(dt)
        yield T.TrainUpdate(f"step {i}/{n}", [{"x": i, "value": 1.0 / i, "series": "loss"}],
                            fraction=i / n)
    yield T.TrainUpdate("Finished", fraction=1.0)


def test_job_survives_its_follower_and_a_new_one_reattaches():
    job = T.Job("test run")
    job.start(_slow_updates(60, job.stop))
    first = job.follow()
    assert next(first).status  # a page shows it ...
    first.close()  # ... and goes away (reload): the job keeps running
    time.sleep(0.3)
    assert job.running
    seen = [u.status for u in job.follow()]  # a reloaded page re-attaches, to the end
    assert seen[-1] == "Finished" and not job.running
    assert any("elapsed" in s for s in seen[:-1])
    assert any("left" in s and "%" in s for s in seen[:-1])  # remaining time and progress bar


def test_one_training_at_a_time_and_cancel():
    a, b = T.Job("style training"), T.Job("classifier training")
    a.start(_slow_updates(500, a.stop))
    with pytest.raises(ValueError, match="style training is already running"):
        b.start(_slow_updates(5, b.stop), others=(a,))
    assert a.cancel().startswith("cancelling…")
    assert list(a.follow())[-1].status == "Cancelled"
    assert b.cancel() == "Nothing is training."


def test_job_error_is_shown_without_paths():
    job = T.Job()

    def broken():
        yield T.TrainUpdate("step 1")
        raise ValueError("cannot read /srv/secret/data/x.jpg: truncated")

    job.start(broken())
    with pytest.raises(ValueError, match="cannot read x.jpg: truncated"):
        list(job.follow(raise_errors=True))
    assert job.update.status == "Failed: cannot read x.jpg: truncated"


def test_invalid_arch_norm_is_refused_at_once(tmp_path):
    cfg = make_ui_config(tmp_path, with_models=False)
    data = T.dataset_dirs(cfg)[0][1]
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="IBN"):
        T.train_classifier(cfg, T.Job(), "resnet18_ibn_a", "in", data, 1)  # no iteration needed
    with pytest.raises(ValueError, match="unknown architecture"):
        T.train_classifier(cfg, T.Job(), "resnet999", "bn", data, 1)
    assert time.monotonic() - t0 < 30  # no model was built, no data decoded
    assert not (cfg.runs_dir / "classify").exists()


def test_cancel_while_the_dataset_is_decoding(tmp_path, monkeypatch):
    cfg = make_ui_config(tmp_path, with_models=False)
    job = T.Job("classifier training")
    import classify.data

    real = classify.data.load_folder

    def slow_load(root, size, progress=None):  # the decode reports progress, then is cancelled
        job.cancel()
        if progress:
            progress(0, 12)
        return real(root, size, progress)

    monkeypatch.setattr(classify.data, "load_folder", slow_load)
    job.start(T.train_classifier(cfg, job, "resnet20", "bn", T.dataset_dirs(cfg)[0][1], 1,
                                 batch_size=4))
    assert list(job.follow())[-1].status.startswith("Cancelled")
    assert cfg.registry.names("classify") == []


def test_datasets_and_content_found_at_any_depth(tmp_path):
    deep = tmp_path / "root" / "a" / "b" / "c"
    make_image_folder(deep / "mycifar" / "train", per_class=1, size=8)
    make_image_folder(deep / "mycifar" / "test", per_class=1, size=8)
    for dom in ("photo", "art", "sketch"):
        make_image_folder(tmp_path / "root" / "x" / "pacslike" / dom, per_class=1, size=8)
    make_image_folder(tmp_path / "root" / "photos", classes=("holiday",), per_class=1, size=8)
    cfg = UIConfig(allowed_dirs=[tmp_path / "root"], runs_dir=tmp_path / "runs")
    specs = [v for _, v in T.dataset_dirs(cfg)]
    assert f"folder:{deep / 'mycifar' / 'train'},{deep / 'mycifar' / 'test'}" in specs
    assert f"pacs:{tmp_path / 'root' / 'x' / 'pacslike'}" in specs and len(specs) == 2
    content = dict((v, label) for label, v in T.content_dirs(cfg))
    # photo folders by name with their counts; the datasets' class folders are not offered
    assert content == {str(tmp_path / "root"): "root (1 images)",
                       str(tmp_path / "root" / "photos"): "root/photos (1 images)",
                       str(tmp_path / "root" / "photos" / "holiday"):
                           "root/photos/holiday (1 images)"}
    labels = [label for label, _ in T.dataset_dirs(cfg)]
    assert "root/a/b/c/mycifar — 2 classes, 2 training + 2 test images" in labels
    assert "root/x/pacslike — domains (art 2, photo 2, sketch 2 images), 2 classes" in labels


def test_startup_message_says_share_flag():
    from ui.app import startup_message

    text = startup_message("http://127.0.0.1:7860/", None)
    assert "--share" in text and "share=True" not in text
    assert "https://x.gradio.live" in startup_message("http://127.0.0.1:7860/",
                                                      "https://x.gradio.live")


def test_cli_ui_help_and_import_stay_light():
    code = ("import sys, cli.ui\n"
            "assert 'torch' not in sys.modules and 'gradio' not in sys.modules, 'heavy import'\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    import main

    out = CliRunner().invoke(main.app, ["ui", "--help"]).output
    assert "COMMAND [ARGS]" not in out and "--memory-budget" in out and "--share" in out


def test_cli_memory_budget_option(monkeypatch, tmp_path):
    import main
    import ui

    from PIL import Image as PILImage

    seen = {}
    monkeypatch.setattr(ui, "launch", lambda cfg, **kw: seen.update(cfg=cfg))
    monkeypatch.setattr(PILImage, "MAX_IMAGE_PIXELS", PILImage.MAX_IMAGE_PIXELS)
    args = ["--device", "cpu", "ui", "--allowed-dir", str(tmp_path), "--memory-budget"]
    assert CliRunner().invoke(main.app, args + ["512"]).exit_code == 0
    assert seen["cfg"].memory_budget_mb == 512
    r = CliRunner().invoke(main.app, args + ["1"])
    assert r.exit_code == 2 and "--memory-budget must be at least 64" in r.output


def test_stylize_reports_progress(cfg):
    calls = []
    H.stylize(cfg, gradient_image(40, 30), "ui:tiny-in", on_progress=lambda d, t: calls.append(
        (d, t)))
    assert calls and calls[-1][0] == calls[-1][1] and calls == sorted(calls)


def make_two_style_model(path: Path) -> Path:
    """A small conditional-IN TransformerNet with two styles, "stripes" and "dots", whose norm
    parameters differ (so the styles and their blends give different images)."""
    import norms
    import stylize
    from stylize.train import save_model

    gen = torch.Generator().manual_seed(0)
    net = stylize.TransformerNet(config=stylize.StyleConfig("cin", 8, 1, num_styles=2,
                                                            output="residual"))
    with torch.no_grad():
        for _, layer in norms.conditional_layers(net):
            layer.weight.normal_(1, 0.3, generator=gen)
            layer.bias.normal_(0, 0.3, generator=gen)
        net.deconv3.conv2d.weight.normal_(0, 0.05, generator=gen)
    return save_model(path, net.eval(), {"styles": ["stripes", "dots"]})


def test_multi_style_model_selects_and_blends_styles(cfg, tmp_path):
    path = make_two_style_model(tmp_path / "two.safetensors")
    name = cfg.registry.add("stylize", "two-styles", path)
    choice = f"ui:{name}"
    assert H.style_choices(cfg, choice) == ["stripes", "dots"]
    assert H.style_choices(cfg, "ui:tiny-in") == []
    img = gradient_image(32, 24)
    a, b = (pixels(H.stylize(cfg, img, choice, style=s)) for s in ("stripes", "dots"))
    mid = pixels(H.stylize(cfg, img, choice, style="stripes:0.5,dots:0.5"))
    assert not torch.equal(a, b) and not torch.equal(mid, a) and not torch.equal(mid, b)
    assert torch.equal(pixels(H.stylize(cfg, img, choice)), a)  # the cached net is untouched
    with pytest.raises(ValueError, match="no style 'nope'"):
        H.stylize(cfg, img, choice, style="nope")
    # the Blend-with box and its weight (share of the second style)
    blend = pixels(H.stylize(cfg, img, choice, style="stripes", blend_with="dots",
                             blend_weight=0.5))
    assert torch.allclose(blend, mid, atol=1)
    assert not torch.equal(blend, a) and not torch.equal(blend, b)
    third = pixels(H.stylize(cfg, img, choice, style="stripes", blend_with="dots",
                             blend_weight=0.25))
    assert not torch.equal(third, blend) and not torch.equal(third, a)
    assert not torch.equal(third, b)
    for w, want in ((0.0, a), (1.0, b)):
        assert torch.equal(pixels(H.stylize(cfg, img, choice, style="stripes", blend_with="dots",
                                            blend_weight=w)), want)
    assert torch.equal(pixels(H.stylize(cfg, img, choice, style="dots", blend_with=H.NO_BLEND,
                                        blend_weight=0.7)), b)
    assert torch.equal(pixels(H.stylize(cfg, img, choice, style="dots", blend_with="Dots",
                                        blend_weight=0.7)), b)  # the same style twice
    # a typed blend in the Style box still works when Blend with is "none"
    assert torch.equal(pixels(H.stylize(cfg, img, choice, style="stripes:0.5,dots:0.5",
                                        blend_with=H.NO_BLEND, blend_weight=0.9)), mid)


def test_blend_spec():
    assert H.blend_spec("candy", None, 0.5) == "candy"
    assert H.blend_spec("candy", H.NO_BLEND, 0.5) == "candy"
    assert H.blend_spec("candy", "Candy", 0.3) == "candy"  # the same style twice
    assert H.blend_spec("candy", "wave", 0.0) == "candy"
    assert H.blend_spec("candy", "wave", 1.0) == "wave"
    # a mapping for the library, not a string for it to parse again
    assert H.blend_spec("candy", "wave", 0.25) == {"candy": 0.75, "wave": 0.25}
    assert H.blend_spec(None, "wave", 0.5) == {"0": 0.5, "wave": 0.5}  # no first pick: style 0
    with pytest.raises(ValueError, match="already holds a blend"):
        H.blend_spec("candy:0.5,wave:0.5", "mosaic", 0.5)
    with pytest.raises(ValueError, match="between 0 and 1"):
        H.blend_spec("candy", "wave", 1.5)


# ----------------------------------------------------------------------------- webcam and video

def _jitter_frames(n: int = 12, h: int = 48, w: int = 64) -> list:
    """A static texture with a square flashing black/white at random places (per-frame instance
    statistics jump every frame), as PIL images."""
    import numpy as np

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 5) % 256, (yy * 7) % 256, ((xx + yy) * 3) % 256], -1).astype(float)
    out = []
    for t in range(n):
        f = base + rng.normal(0, 6, base.shape)
        y0, x0 = rng.integers(0, h - 20), rng.integers(0, w - 20)
        f[y0:y0 + 20, x0:x0 + 20] = 255 if t % 2 else 0
        out.append(Image.fromarray(np.clip(f, 0, 255).astype(np.uint8), "RGB"))
    return out


def _webcam_run(cfg, frames, choice, smooth):
    live, outs = None, []
    for f in frames:
        y, live = H.webcam_frame(cfg, f, choice, 1.0, False, smooth, live)
        outs.append(__import__("numpy").asarray(y))
    return outs, live


def test_webcam_smoothing_is_the_library_stream_and_lowers_flicker(cfg):
    import numpy as np

    from stylize.video import LiveStylizer, flicker_ratio, stylize_frames

    frames = _jitter_frames()
    arrays = [np.asarray(f) for f in frames]
    smooth, live = _webcam_run(cfg, frames, "ui:tiny-in", True)
    assert isinstance(live, LiveStylizer) and live.frames == len(frames)
    lib = stylize_frames(H.load_style(cfg, "ui:tiny-in"), arrays, smooth=H.SMOOTH_MOMENTUM,
                         batch=1, device="cpu")
    assert all(np.array_equal(a, b) for a, b in zip(smooth, lib))  # exactly the library path
    plain, none = _webcam_run(cfg, frames, "ui:tiny-in", False)
    assert none is None and plain[0].shape == smooth[0].shape == (48, 64, 3)
    assert any(not np.array_equal(a, b) for a, b in zip(smooth[1:], plain[1:]))
    # a trained model: the UI's smoothed stream is the library's too, and differs from per-frame
    # statistics (that it damps flicker on a trained model is tested on the library's own path,
    # test_stylize_video.py; by how much depends on how many of its gates lean to IN)
    shipped = [v for _, v in H.model_choices(cfg, "stylize") if v == "candy_bin"]
    if shipped:
        on = _webcam_run(cfg, frames, "candy_bin", True)[0]
        off = _webcam_run(cfg, frames, "candy_bin", False)[0]
        lib = stylize_frames(H.load_style(cfg, "candy_bin"), arrays, smooth=H.SMOOTH_MOMENTUM,
                             batch=1, device="cpu")
        assert all(np.array_equal(a, b) for a, b in zip(on, lib))
        assert flicker_ratio(arrays, on) != flicker_ratio(arrays, off)


def test_webcam_stream_restarts_with_the_model_and_stays_per_session(cfg):
    import numpy as np

    frames = _jitter_frames(4)
    _, a = _webcam_run(cfg, frames[:3], "ui:tiny-in", True)
    _, b = _webcam_run(cfg, frames[:1], "ui:tiny-in", True)  # another session: its own stream
    assert a is not b and a.frames == 3 and b.frames == 1
    y, c = H.webcam_frame(cfg, frames[3], "ui:tiny-bin", 1.0, False, True, a)  # model changed
    assert c is not a and c.frames == 1 and a.frames == 3
    first, _ = H.webcam_frame(cfg, frames[3], "ui:tiny-bin", 1.0, False, True, None)
    assert np.array_equal(np.asarray(y), np.asarray(first))  # a new stream: first-frame output
    assert H.webcam_frame(cfg, None, "ui:tiny-in", 1.0, False, True, a) == (None, a)
    big = gradient_image(640, 480)
    y, _ = H.webcam_frame(cfg, big, "ui:tiny-in", 0.5, True, True, None)
    assert y.size == (640, 480)


def test_webcam_frames_warm_the_compiled_path_in_the_background_and_stills_do_not(
        cfg, monkeypatch):
    calls = []
    monkeypatch.setattr(H, "warm_in_background",
                        lambda model, size, **kw: calls.append((model.name, size, kw)))
    frame = gradient_image(640, 480)
    y, live = H.webcam_frame(cfg, frame, "ui:tiny-in", 1.0, False, False, None)
    assert y.size == (640, 480) and live is None
    assert calls == [(H.load_style(cfg, "ui:tiny-in").name, (640, 480),
                      {"device": H.device_of(cfg), "max_size": H.WEBCAM_SIZE})]
    H.webcam_frame(cfg, frame, "ui:tiny-in", 1.0, False, True, None)  # smooth: eager streaming
    H.stylize(cfg, frame, "ui:tiny-in")  # a single photo never compiles
    assert len(calls) == 1


def test_video_handler_round_trip(cfg, tmp_path, monkeypatch):
    import numpy as np

    from stylize.video import read_clip, write_clip

    monkeypatch.setattr(cfg, "output_dir", tmp_path / "outputs")
    src = write_clip([np.asarray(f) for f in _jitter_frames(6)], tmp_path / "clip.mp4", fps=12,
                     audio=True)
    calls = []
    path, summary = H.stylize_video(cfg, str(src), "ui:tiny-in", None, True, 0,
                                    on_progress=lambda d, t: calls.append((d, t)))
    # named after the input and the style, one folder per result
    assert Path(path).parent.parent == cfg.output_dir / "video" and Path(path).name == "clip-tiny.mp4"
    frames, fps, audio = read_clip(path)
    assert len(frames) == 6 and frames[0].shape == (48, 64, 3)
    assert fps == pytest.approx(12.0) and audio
    assert "6 frames" in summary and "flicker" in summary and "momentum 0.9" in summary
    assert calls and calls[-1] == (6, 6)
    path2, summary2 = H.stylize_video(cfg, str(src), "ui:tiny-bin", None, False, 32, gate=0.5)
    assert len(read_clip(path2)[0]) == 6 and "smoothing off" in summary2 and path2 != path


def test_video_handler_refuses_bad_input(cfg, tmp_path, monkeypatch):
    import numpy as np

    from stylize.video import write_clip

    gr = pytest.importorskip("gradio")
    from ui.app import guard

    monkeypatch.setattr(cfg, "output_dir", tmp_path / "outputs")
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    png = tmp_path / "still.png"
    gradient_image(20, 20).save(png)
    clip = write_clip([np.asarray(f) for f in _jitter_frames(8)], tmp_path / "c.mp4", fps=10)
    cases = [(None, "upload a video first"), (str(text), "not a video this server can read"),
             (str(png), "still image, not a video"),
             (str(tmp_path / "gone.mp4"), "not a video this server can read")]
    for video, msg in cases:
        with pytest.raises(gr.Error, match=msg) as err:
            guard(H.stylize_video)(cfg, video, "ui:tiny-in")
        assert str(tmp_path) not in str(err.value)
    monkeypatch.setattr(cfg, "max_video_frames", 5)
    with pytest.raises(gr.Error, match="about 8 frames.*at most 5"):
        guard(H.stylize_video)(cfg, str(clip), "ui:tiny-in")
    monkeypatch.setattr(cfg, "max_video_seconds", 0.5)
    with pytest.raises(ValueError, match="0.5 s"):
        H.check_video(cfg, str(clip))
    monkeypatch.setattr(cfg, "max_video_seconds", 60.0)
    # a container that does not state its length is stopped while decoding, leaving no file
    import stylize.video as V

    monkeypatch.setattr(H, "probe_video", lambda p: V.VideoInfo(None, 10.0, None, 64, 48, False))
    with pytest.raises(gr.Error, match="more than 5 frames"):
        guard(H.stylize_video)(cfg, str(clip), "ui:tiny-in")
    assert not list((cfg.output_dir / "video").glob("*"))
    with pytest.raises(gr.Error, match="unknown stylize model"):
        guard(H.stylize_video)(cfg, str(clip), "nope")


def test_upload_limit_is_the_memory_budget(tmp_path):
    """No fixed 16 MP refusal: what the budget can tile is accepted, and the UI's copy of the
    image-buffer size agrees with the library's planner."""
    from PIL import Image as PILImage

    from stylize import tiling
    from ui import config as C

    assert C.IMAGE_BYTES_PER_PIXEL == tiling._IMAGE_BYTES_PER_PIXEL
    cfg = C.UIConfig(allowed_dirs=[], runs_dir=tmp_path / "runs")
    assert cfg.max_pixels == C.pixels_for_budget(2048) == 2048 * 2**20 // 32
    big = tmp_path / "big.png"
    PILImage.new("RGB", (5000, 4000), (200, 30, 30)).save(big)  # 20 MP: over the old 16 MP cap
    assert H.read_image(cfg, str(big)).size == (5000, 4000)
    small = C.UIConfig(allowed_dirs=[], runs_dir=tmp_path / "runs", memory_budget_mb=256)
    with pytest.raises(ValueError, match=r"5000×4000 \(20 MP\) is larger than this server's limit"):
        H.read_image(small, str(big))  # 256 MB holds 8 MP of buffers


def test_stylize_tab_opens_on_the_shipped_model_with_most_styles(monkeypatch):
    import weights

    monkeypatch.setattr(weights, "manifest", lambda: {
        "a": {"kind": "stylize"}, "b": {"kind": "stylize", "styles": ["x", "y"]},
        "c": {"kind": "stylize", "styles": ["x", "y"]}})
    assert H.default_style_model([("a", "a"), ("b", "b"), ("c", "c"), ("t", "ui:t")]) == "b"
    assert H.default_style_model([("a", "a"), ("t", "ui:t")]) == "a"
    assert H.default_style_model([]) is None
    # the page is built with the Style box shown for it (before any load-time call)
    assert H.shipped_styles("b") == ["x", "y"]
    assert H.shipped_styles("a") == H.shipped_styles("ui:t") == H.shipped_styles(None) == []


def test_multi_style_bin_model_info_reports_its_gates(cfg, tmp_path):
    """Conditional BIN holds a ρ row per style; the Stylize tab's model info averages them all."""
    import stylize
    from stylize.train import save_model

    net = stylize.TransformerNet(config=stylize.StyleConfig("cbin", 8, 1, num_styles=2,
                                                            output="residual"))
    name = cfg.registry.add("stylize", "two-bin", save_model(tmp_path / "m.safetensors", net.eval(),
                                                             {"styles": ["a", "b"]}))
    text, gated = H.style_model_info(cfg, f"ui:{name}")
    assert gated and "mean ρ 1.00" in text and "2 styles: a, b" in text
    assert H.style_choices(cfg, f"ui:{name}") == ["a", "b"]


# ----------------------------------------------------------------------------- issue 35 / 32

def test_video_and_webcam_use_the_chosen_style(cfg, tmp_path, monkeypatch):
    """Issue 35.1: a multi-style model's Style (or blend) reaches the video and the webcam."""
    import numpy as np

    from stylize.video import read_clip, write_clip

    monkeypatch.setattr(cfg, "output_dir", tmp_path / "outputs")
    model = str(make_two_style_model(tmp_path / "two.safetensors"))
    frames = _jitter_frames(2)
    clip = write_clip([np.asarray(f) for f in frames], tmp_path / "clip.mp4", fps=12)
    first = {}
    for style in ("stripes", "dots"):
        path, _ = H.stylize_video(cfg, str(clip), None, model, False, 0, style=style)
        assert Path(path).name == f"clip-{style}.mp4"  # named after the input and the style
        first[style] = torch.from_numpy(read_clip(path)[0][0].copy()).float()
    still = {s: pixels(H.stylize(cfg, frames[0], None, model, style=s)) for s in first}
    for s, other in (("stripes", "dots"), ("dots", "stripes")):  # (mp4 is lossy on noise)
        near = (first[s] - still[s]).abs().mean()
        assert near < 0.8 * (first[s] - still[other]).abs().mean(), s
    for smooth in (False, True):
        cam = {s: pixels(H.webcam_frame(cfg, frames[0], "ui:tiny-in", 1.0, False, smooth,
                                        None)[0]) for s in (None,)}
        assert cam[None].shape[:2] == (48, 64)
    # the webcam with the two-style model (registered) follows its Style too
    cfg.registry.add("stylize", "two-styles", model)
    a = pixels(H.webcam_frame(cfg, frames[0], "ui:two-styles", style="stripes")[0])
    b = pixels(H.webcam_frame(cfg, frames[0], "ui:two-styles", style="dots")[0])
    assert (a - b).abs().mean() > 1.0
    live = None
    c, live = H.webcam_frame(cfg, frames[0], "ui:two-styles", smooth=True, live=live,
                             style={"stripes": 0.0, "dots": 1.0})
    assert (pixels(c) - b).abs().mean() < (pixels(c) - a).abs().mean()


def test_feature_stats_of_a_conditional_model(cfg, tmp_path):
    """Issue 35.3: a multi-style (conditional) model's norm layers are found and hooked."""
    model = make_two_style_model(tmp_path / "two.safetensors")
    cfg.registry.add("stylize", "two-cin", model)
    _, stats = H.feature_stats(cfg, gradient_image(40, 32), ["stylize:ui:two-cin"], 0.0,
                               "brightness", 1.5)
    assert len(stats[0].mean) == 2 and len(stats[0].mean[0]) == 8
    assert H.feature_figure(stats, "brightness") is not None


def test_about_names_the_styles_of_a_multi_style_model():
    """Issue 35.6: no "style ?" for a model that lists its styles."""
    md = H.shipped_models_markdown()
    assert "style ?" not in md and "?" not in md.replace("?)", "")
    for name, e in weights.manifest().items():
        if e.get("styles"):
            assert f"{len(e['styles'])} styles ({', '.join(e['styles'])})" in md


def test_weights_resolve_and_list(tmp_path):
    """One lookup of model files (issue 32.3), used by stylize, classify and the UI."""
    assert weights.list("stylize") == weights.names("stylize")
    for name in weights.list("classify"):
        assert weights.resolve(name, "classify") == weights.path(name, "classify")
    f = tmp_path / "m.safetensors"
    f.write_bytes(b"x")
    assert weights.resolve(str(f), "stylize") == f
    for spec, kind, msg in ((tmp_path, "stylize", "is a folder"),
                            ("nope", "classify", "no classifier 'nope'"),
                            ("x", "video", "unknown model kind")):
        with pytest.raises(ValueError, match=msg):
            weights.resolve(spec, kind)
    if weights.list("classify") and weights.list("stylize"):
        with pytest.raises(ValueError, match="is a shipped classifier, not a style model"):
            weights.resolve(weights.list("classify")[0], "stylize")


def test_style_selection_takes_a_mapping():
    from stylize.model import style_selection

    w = style_selection({"dots": 3, "Stripes": 1}, ["stripes", "dots"])
    assert torch.allclose(w, torch.tensor([0.25, 0.75]))
    with pytest.raises(ValueError, match="no style 'wave'"):
        style_selection({"wave": 1.0}, ["stripes", "dots"])


def test_compare_memory_check_is_the_librarys_planner(cfg):
    """The UI keeps no bytes-per-pixel figure of its own: a grid that the library's planner
    would tile is refused, one it would not is accepted."""
    from stylize.tiling import plan_memory

    assert not hasattr(H, "STYLE_BYTES_PER_PIXEL")
    model = H.load_style(cfg, "ui:tiny-in")
    tiny = UIConfig(allowed_dirs=[], runs_dir=cfg.runs_dir, memory_budget_mb=64)
    assert plan_memory(256, 256, model.config, max_memory=H.request_budget(tiny)).tile is None
    H.check_memory(tiny, model, (256, 256))
    side = 1024
    while plan_memory(side, side, model.config, max_memory=H.request_budget(tiny)).tile is None:
        side *= 2  # the first size the library would tile
    with pytest.raises(ValueError, match="set the size to"):
        H.check_memory(tiny, model, (side, side))


def test_shift_chart_and_estimates(cfg):
    rows = [H.ShiftRow("ui:r20-bn", "bn", "cat", 0.9, "dog", 0.6, 0.2),
            H.ShiftRow("ui:r20-in", "in", "cat", 0.8, "cat", 0.7, 0.7)]
    fig = H.shift_chart(rows, "brightness")
    labels = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert labels == ["ui:r20-bn\n(bn)", "ui:r20-in\n(in)"]
    assert len(fig.axes[0].patches) == 4
    assert "min" in T.style_estimate(256, 1000, 4) and "1000 steps" in T.style_estimate(128, 10, 2)
    data = T.dataset_dirs(cfg)[0][1]
    assert "12 training images × 2 epochs" in T.classifier_estimate(cfg, data, 2, 0)
    assert "5 training images" in T.classifier_estimate(cfg, data, 1, 5)
    assert T.classifier_estimate(cfg, "folder:/elsewhere", 1, 0) == ""


def test_downloads_are_named_after_input_and_style(cfg, tmp_path, monkeypatch):
    monkeypatch.setattr(cfg, "output_dir", tmp_path / "out")
    src = tmp_path / "my photo.png"
    gradient_image(20, 16).save(src)
    a = H.stylize_file(cfg, str(src), "ui:tiny-in")
    model = str(make_two_style_model(tmp_path / "two.safetensors"))
    b = H.stylize_file(cfg, str(src), None, model, style="stripes", blend_with="dots",
                       blend_weight=0.3)
    assert Path(a).name == "my-photo-tiny.png" and Path(b).name == "my-photo-stripes70-dots30.png"
    assert Image.open(b).size == (20, 16)
