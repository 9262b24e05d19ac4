"""The train / held-out content split (stylize.photos), training on the train part only, and
`stylize score` (S, C, time, contact sheet, method registry) on a small random loss network."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import main
from conftest import need_shared
from stylize import StyleConfig, TransformerNet
from stylize import photos as P
from stylize import score as SC
from stylize.losses import encoder_from_state_dict
from stylize.train import ContentImages, TrainConfig, save_model, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")
runner = CliRunner()


def _save_png(path: Path, seed: int, size: tuple[int, int] = (64, 64)) -> Path:
    rng = np.random.default_rng(seed)
    h, w = size
    yy, xx = np.mgrid[0:h, 0:w]
    arr = np.stack([(xx * (seed + 2) * 3) % 256, (yy * 5 + seed * 40) % 256,
                    rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _folder(root: Path, n: int) -> Path:
    for i in range(n):
        _save_png(root / f"p{i:02d}.png", i)
    return root


# ------------------------------------------------------------------------------ the split

def test_rule_holds_out_every_tenth_sorted_name():
    names = [f"f{i:02d}.jpg" for i in range(23)][::-1]
    s = P.rule_split(names)
    assert s["heldout"] == ["f00.jpg", "f10.jpg", "f20.jpg"]
    assert len(s["train"]) == 20 and not set(s["train"]) & set(s["heldout"])


def test_without_a_split_file_the_rule_decides(tmp_path):
    folder = _folder(tmp_path / "content", 12)
    s = P.content_split(folder)
    assert [p.name for p in s["heldout"]] == ["p00.png", "p10.png"]
    assert len(s["train"]) == 10
    files, info = P.training_photos(folder)  # a user's own folder: nothing held out
    assert len(files) == 12 and info["heldout_excluded"] == 0 and info["split"] is None


def test_a_split_file_beside_the_folder_wins(tmp_path):
    folder = _folder(tmp_path / "content", 12)
    (tmp_path / "content-split.json").write_text(json.dumps(
        {"rule": "test", "heldout": ["p03.png", "p05.png", "gone.png"],
         "train": [f"p{i:02d}.png" for i in range(12) if i not in (3, 5, 11)]}))
    s = P.content_split(folder)
    # p11 is in neither list (added later): train, never held out; gone.png is ignored
    assert [p.name for p in s["heldout"]] == ["p03.png", "p05.png"]
    assert "p11.png" in [p.name for p in s["train"]] and len(s["train"]) == 10
    files, info = P.training_photos(folder)
    assert sorted(p.name for p in files) == sorted(p.name for p in s["train"])
    assert info["photos"] == 10 and info["heldout_excluded"] == 2
    assert info["split"].endswith("content-split.json")
    assert len(P.training_photos(folder, "all")[0]) == 12
    with pytest.raises(ValueError, match="train' or 'all"):
        P.training_photos(folder, "heldout")


def test_a_split_file_for_another_folder_is_not_applied(tmp_path):
    folder = _folder(tmp_path / "mine", 11)
    (tmp_path / "content-split.json").write_text(json.dumps(
        {"heldout": ["x.jpg"], "train": ["y.jpg"]}))
    assert [p.name for p in P.content_split(folder)["heldout"]] == ["p00.png", "p10.png"]


@pytest.mark.parametrize("text", ["{not json", json.dumps({"train": ["a"]}),
                                  json.dumps({"train": ["p00.png"], "heldout": ["p00.png"]})])
def test_a_broken_split_file_is_one_clear_error(tmp_path, text):
    folder = _folder(tmp_path / "content", 3)
    (tmp_path / "content-split.json").write_text(text)
    with pytest.raises(ValueError, match="content-split.json"):
        P.content_split(folder)


def test_the_shared_split_is_the_rule():
    folder = need_shared("data", "content")
    saved = json.loads(need_shared("data", "content-split.json").read_text())
    s = P.content_split(folder)
    assert [p.name for p in s["heldout"]] == sorted(saved["heldout"])
    assert [p.name for p in s["train"]] == sorted(saved["train"])
    assert (len(s["train"]), len(s["heldout"])) == (501, 56)
    assert P.rule_split(saved["train"] + saved["heldout"]) == {
        "train": sorted(saved["train"]), "heldout": sorted(saved["heldout"])}


class TinyEncoder(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.taps = ["t"]
        self.requires_grad_(False)

    def forward(self, x):
        return {"t": torch.relu(self.c(x / 255.0))}


def test_training_leaves_out_the_heldout_photos_and_says_so(tmp_path):
    folder = _folder(tmp_path / "data" / "content", 10)
    (tmp_path / "data" / "content-split.json").write_text(json.dumps(
        {"heldout": ["p00.png", "p07.png"], "train": [f"p{i:02d}.png" for i in range(10)
                                                      if i not in (0, 7)]}))
    data = ContentImages(folder, 32, "train")
    assert len(data) == 8 and not {"p00.png", "p07.png"} & {f.name for f in data.files}
    assert len(ContentImages(folder, 32, "all")) == 10
    out = tmp_path / "run"
    cfg = TrainConfig(style_image=str(_save_png(tmp_path / "style.png", 9)),
                      content_dir=str(folder), out=str(out), norm="in", image_size=32,
                      batch_size=2, steps=2, seed=1, device="cpu", checkpoint_every=0,
                      base_channels=8, num_residual=1, style_scales=[1])
    path = train(cfg, encoder=TinyEncoder(), show_bar=False)
    logged = json.loads((out / "config.json").read_text())
    assert logged["content_split"] == "train"
    assert logged["content_photos"]["photos"] == 8
    assert logged["content_photos"]["heldout_excluded"] == 2
    from engine.checkpoint import read_model

    _, meta = read_model(path, "style")
    assert meta["content_photos"]["photos"] == 8
    with pytest.raises(ValueError, match="content split"):
        TrainConfig(style_image="a.jpg", content_dir="c", content_split="heldout").validate()


# ------------------------------------------------------------------------------ score

def _random_vgg_state() -> dict[str, torch.Tensor]:
    """A normalised VGG-19 encoder up to relu3_1 (the shared file's layout), random weights."""
    g = torch.Generator().manual_seed(7)
    shapes = [(3, 3, 1, 1), (64, 3, 3, 3), (64, 64, 3, 3), (128, 64, 3, 3), (128, 128, 3, 3),
              (256, 128, 3, 3)]
    sd = {}
    for i, s in enumerate(shapes, start=1):
        fan_in = s[1] * s[2] * s[3]
        sd[f"conv{i}.weight"] = torch.randn(s, generator=g) * (2.0 / fan_in) ** 0.5
        sd[f"conv{i}.bias"] = torch.zeros(s[0])
    sd["conv1.weight"] = torch.eye(3).view(3, 3, 1, 1) * 255.0
    return sd


@pytest.fixture(scope="module")
def encoder():
    return encoder_from_state_dict(_random_vgg_state())


@pytest.fixture
def methods():
    added: list[str] = []

    def add(name, factory):
        SC.register_method(name, factory)
        added.append(name)

    yield add
    for name in added:
        SC._METHODS.pop(name, None)


def test_the_photo_scores_zero_and_the_style_itself_scores_one(tmp_path, encoder, methods):
    style = _save_png(tmp_path / "style.png", 5)
    photos = [_save_png(tmp_path / "ph" / f"{i}.png", i) for i in range(2)]
    methods("copy_style", lambda style_path, **_: (lambda x: SC.load_photo(style_path, 64)))
    r = SC.score(["photo", "copy_style"], [style], photos, size=64, style_size=64,
                 encoder=encoder, bar=False, sheet_photos=1)
    cells = {(c["method"], c["photo"]): c for c in r.cells}
    for p in photos:
        assert cells[("photo", p.name)]["S"] == 0.0 and cells[("photo", p.name)]["C"] == 0.0
        assert cells[("copy_style", p.name)]["S"] == pytest.approx(1.0, abs=1e-5)
        assert cells[("copy_style", p.name)]["C"] > 0.1
        assert cells[("photo", p.name)]["style_loss_photo"] > 0
    means = {(s["method"], s["style"]): s for s in r.summary}
    assert means[("copy_style", "style")]["n"] == 2
    assert means[("copy_style", "style")]["S"] == pytest.approx(1.0, abs=1e-5)
    assert [m["method"] for m in r.methods] == ["photo", "copy_style"]
    assert "| copy_style | style | 2 |" in SC.markdown(r)


def _noise_png(path: Path, seed: int, mean: tuple[int, int, int], sd: float) -> Path:
    """Stationary colour noise: every region has about the whole image's Gram statistics."""
    rng = np.random.default_rng(seed)
    arr = np.clip(rng.normal(mean, sd, (64, 64, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def test_s_grows_toward_the_style_and_c_with_the_change(tmp_path, encoder, methods):
    style = _noise_png(tmp_path / "style.png", 5, (200, 60, 90), 60)
    photo = _noise_png(tmp_path / "ph" / "a.png", 1, (90, 140, 120), 15)
    target = SC.load_photo(style, 64)
    def paste(rows):  # the style in the top ``rows`` rows: Gram ≈ a mix of the two images'
        def run(x):
            y = x.clone()
            y[..., :rows, :] = target[..., :rows, :]
            return y
        return lambda sp, **_: run

    methods("quarter", paste(16))
    methods("three_quarters", paste(48))
    r = SC.score(["quarter", "three_quarters"], [style], [photo], size=64, style_size=64,
                 encoder=encoder, bar=False, sheet_photos=0)
    lo, hi = r.cells
    assert 0 < lo["S"] < hi["S"] < 1 and 0 < lo["C"] < hi["C"]


def test_unavailable_styles_are_skipped_and_sizes_are_fixed(tmp_path, encoder, methods):
    styles = [_save_png(tmp_path / "candy.png", 5), _save_png(tmp_path / "mosaic.png", 6)]
    photo = _save_png(tmp_path / "ph" / "wide.png", 1, size=(50, 80))
    calls = []

    def only_candy(style_path, **opts):
        calls.append(opts)
        if Path(style_path).stem != "candy":
            raise SC.MethodUnavailable("no mosaic here")
        return lambda x: torch.nn.functional.interpolate(x, scale_factor=0.5)  # other size

    methods("only_candy", only_candy)
    r = SC.score(["only_candy"], styles, [photo], size=64, encoder=encoder, bar=False)
    assert [(c["style"], c["height"], c["width"]) for c in r.cells] == [("candy", 64, 102)]
    assert r.skipped == [{"method": "only_candy", "style": "mosaic", "reason": "no mosaic here"}]
    assert calls[0]["device"] == "cpu" and calls[0]["arg"] is None
    with pytest.raises(ValueError, match="no method could produce"):
        SC.score(["only_candy"], styles[1:], [photo], size=64, encoder=encoder, bar=False)


def test_registry_refuses_clashes_and_unknown_names(methods):
    with pytest.raises(ValueError, match="already registered"):
        SC.register_method("photo", lambda *a, **k: None)
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        SC.parse_method("nope")
    with pytest.raises(ValueError, match="names nothing"):
        SC.parse_method("model:")
    assert SC.parse_method("model:runs/a/model.safetensors") == ("model", "runs/a/model.safetensors")
    with pytest.raises(ValueError):
        SC.register_method("a:b", lambda *a, **k: None)


def _tiny_model(path: Path, styles: list[str]) -> Path:
    torch.manual_seed(0)
    net = TransformerNet(config=StyleConfig("in" if len(styles) == 1 else "cin", base_channels=8,
                                            num_residual=1, num_styles=len(styles)))
    with torch.no_grad():  # mid-grey outputs with structure, and a different β per style row
        net.deconv3.conv2d.weight.mul_(30)
        net.deconv3.conv2d.bias.fill_(128)
        for name, p in net.named_parameters():
            if name.endswith(".bias") and p.ndim == 2:
                p.copy_(torch.randn(p.shape))
    return save_model(path, net.eval(), {"style": styles[0], "styles": styles})


def test_model_method_picks_the_style_by_file_name(tmp_path, encoder):
    model = _tiny_model(tmp_path / "two.safetensors", ["candy", "mosaic"])
    styles = [_save_png(tmp_path / "s" / n, i) for i, n in enumerate(["candy.png", "mosaic.png",
                                                                      "wave.png"])]
    photo = _save_png(tmp_path / "ph" / "a.png", 1)
    spec = f"model:{model}"
    r = SC.score([spec], styles, [photo], size=64, encoder=encoder, bar=False, sheet_photos=1,
                 method_opts={spec: {"style_map": {"wave": "mosaic"}}})
    by_style = {c["style"]: r.sheet[(0, spec, c["style"])] for c in r.cells}
    assert set(by_style) == {"candy", "mosaic", "wave"}
    a, b, c = (np.asarray(by_style[k], dtype=np.int16) for k in ("candy", "mosaic", "wave"))
    assert np.abs(a - b).max() > 0 and np.array_equal(b, c)  # wave → the mosaic row
    with pytest.raises(ValueError, match="has no style 'wave'"):
        SC.score([spec], styles[2:], [photo], size=64, encoder=encoder, bar=False)


def test_contact_sheet_shows_the_scored_pixels(tmp_path, encoder, methods):
    style = _save_png(tmp_path / "style.png", 5)
    photos = [_save_png(tmp_path / "ph" / f"{i}.png", i, size=(64, 96)) for i in range(3)]
    methods("invert", lambda sp, **_: (lambda x: 255 - x))
    r = SC.score(["photo", "invert"], [style], photos, size=64, encoder=encoder, bar=False,
                 sheet_photos=2)
    sheet = SC.contact_sheet(r, [style])  # "photo" has no column: the first column is the photo
    assert len(r.sheet_photos) == 2 and len(r.sheet) == 4
    pad, label, cell = 6, 34, 64
    assert sheet.size == (pad + 2 * (cell + pad), pad + cell + label + 2 * (cell + label + pad))
    y0 = pad + cell + label
    out = np.asarray(sheet)[y0:y0 + cell, pad + cell + pad:pad + 2 * cell + pad]
    want = np.asarray(SC._fit(r.sheet[(0, "invert", "style")], cell))
    assert np.array_equal(out, want)  # 100 %: the cell is the scored output, centre-cropped


# ------------------------------------------------------------------------------ CLI

def test_cli_score_writes_json_and_sheet(tmp_path):
    weights = tmp_path / "vgg.pth"
    torch.save(_random_vgg_state(), weights)
    folder = _folder(tmp_path / "data" / "content", 11)
    style = _save_png(tmp_path / "candy.png", 5)
    out, sheet = tmp_path / "o" / "score.json", tmp_path / "o" / "sheet.png"
    args = ["--device", "cpu", "stylize", "score", "--methods", "photo", "--styles", str(style),
            "--photos", str(folder), "--size", "64", "--style-size", "64", "-o", str(out),
            "--sheet", str(sheet), "--vgg-weights", str(weights)]
    r = runner.invoke(main.app, args)
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert [c["photo"] for c in data["cells"]] == ["p00.png", "p10.png"]  # the held-out part
    assert data["summary"][0]["S"] == 0.0 and data["settings"]["split"] == "heldout"
    assert Image.open(sheet).size[0] > 64
    r = runner.invoke(main.app, args)  # outputs exist: refused, nothing replaced
    assert r.exit_code == 2 and "already exists" in r.output


@pytest.mark.parametrize("extra,message", [
    (["--methods", "nope"], "unknown method"),
    (["--split", "test"], "split must be one of"),
    (["--sheet", "x.gif"], "--sheet must be"),
    (["--style-map", "wave"], "STEM=STYLE"),
])
def test_cli_score_bad_input_is_one_line(tmp_path, extra, message):
    weights = tmp_path / "vgg.pth"
    torch.save(_random_vgg_state(), weights)
    folder = _folder(tmp_path / "content", 2)
    style = _save_png(tmp_path / "candy.png", 5)
    out = tmp_path / "score.json"
    args = ["--device", "cpu", "stylize", "score", "--methods", "photo", "--styles", str(style),
            "--photos", str(folder), "--size", "64", "-o", str(out), "--vgg-weights", str(weights)]
    r = runner.invoke(main.app, args + extra)
    lines = [l for l in r.output.splitlines() if l.strip() and "cell/s" not in l and "cell]" not in l]
    assert r.exit_code == 2 and len(lines) == 1 and message in lines[0], r.output
    assert not out.exists()


def test_method_modules_register_on_first_lookup(tmp_path, monkeypatch):
    (tmp_path / "score_plugin_for_test.py").write_text(
        "from stylize.score import register_method\n"
        "register_method('plugged', lambda style, **o: (lambda x: x))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(SC, "METHOD_MODULES", ["score_plugin_for_test", "no_such_module_here"])
    try:
        assert SC.parse_method("plugged") == ("plugged", None)
        assert "plugged" in SC.method_names()
    finally:
        SC._METHODS.pop("plugged", None)
