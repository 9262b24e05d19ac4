"""classify evaluations: shift functions, divergence maths, predict, and the CLI commands."""
from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import classify
from classify.analysis import feature_divergence, gaussian_sym_kl, shift_table
from classify.data import TensorDataset
from classify.shift import SHIFTS, apply_shift


def _img(seed=0, lo=60, hi=180, size=24):
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(lo, hi, (size, size, 3), dtype=np.uint8), "RGB")


def _a(im):
    return np.asarray(im, dtype=np.int32)


def test_rgb_plus_adds_50_and_red_plus_only_red():
    im = _img()
    assert (_a(apply_shift(im, "rgb_plus")) - _a(im) == 50).all()
    d = _a(apply_shift(im, "red_plus", 30)) - _a(im)
    assert (d[..., 0] == 30).all() and (d[..., 1:] == 0).all()
    assert _a(apply_shift(_img(lo=230, hi=256), "rgb_plus")).max() == 255  # clipped


def test_grayscale_has_equal_channels_and_contrast_scales_std():
    g = _a(apply_shift(_img(), "grayscale"))
    assert np.abs(g[..., 0] - g[..., 1]).max() <= 0 and np.abs(g[..., 1] - g[..., 2]).max() <= 0
    im = _img(lo=100, hi=150)
    c = _a(apply_shift(im, "contrast", 1.5)).astype(float)
    src = _a(im).astype(float)
    assert c.std((0, 1)) == pytest.approx(1.5 * src.std((0, 1)), rel=0.02)
    assert c.mean((0, 1)) == pytest.approx(src.mean((0, 1)), abs=0.6)


def test_identity_strengths_and_sizes():
    im = _img()
    for name, s in [("gamma", 1.0), ("brightness", 1.0), ("blur", 0.0), ("hue", 0.0),
                    ("grayscale", 0.0), ("contrast", 1.0)]:
        assert np.abs(_a(apply_shift(im, name, s)) - _a(im)).max() <= 1, name
    for name in SHIFTS:
        assert apply_shift(im, name).size == im.size
    assert _a(apply_shift(im, "gamma", 2.0)).mean() < _a(im).mean()
    red = Image.new("RGB", (4, 4), (200, 0, 0))
    assert _a(apply_shift(red, "hue", 120))[0, 0].tolist() == [0, 200, 0]  # R -> G
    gray = Image.new("RGB", (4, 4), (90, 90, 90))
    assert _a(apply_shift(gray, "hue", 77))[0, 0].tolist() == [90, 90, 90]
    with pytest.raises(ValueError, match="known: rgb_plus"):
        apply_shift(im, "sepia")


def test_gaussian_sym_kl_closed_form():
    a = torch.tensor([[-1.0], [1.0]])  # mean 0, var 1
    b = a + 1.0  # mean 1, var 1: KL each way = 1/2
    assert gaussian_sym_kl(a, a) == pytest.approx(0.0, abs=1e-6)
    assert gaussian_sym_kl(a, b) == pytest.approx(1.0, rel=1e-5)
    assert gaussian_sym_kl(a, 2 * a) == pytest.approx(0.5 * 4 + 0.5 / 4 - 1, rel=1e-5)


def _clf(norm="bin", classes=3):
    torch.manual_seed(0)
    m = classify.create_model("resnet20", num_classes=classes, norm=norm).eval()
    return classify.Classifier(m, m.config, [f"c{i}" for i in range(classes)], [0.5] * 3,
                               [0.25] * 3, 16, name=f"r20-{norm}")


def _ds(n=12, classes=3):
    g = torch.Generator().manual_seed(0)
    return TensorDataset(torch.randint(0, 256, (n, 3, 16, 16), dtype=torch.uint8, generator=g),
                         torch.arange(n) % classes, [f"c{i}" for i in range(classes)], "toy")


def test_divergence_zero_for_same_domain_positive_for_shift():
    clf, ds = _clf(), _ds()
    same = feature_divergence(clf, ds, ds)
    assert same.layers[0] == "bn1" and len(same.layers) == 1 + 9
    assert max(same.total + same.kept + same.removed_std) < 1e-6
    from classify.analysis import shifted

    d = feature_divergence(clf, ds, shifted(ds, "rgb_plus", 80))
    assert d.total[0] > 0.1 and all(v >= 0 for v in d.kept)
    assert len(d.total_median) == len(d.layers) and all(v >= 0 for v in d.total_median)
    assert "| bn1 |" in d.to_markdown() and "median over channels" in d.to_markdown()


def test_channel_kl_median_resists_a_channel_one_domain_collapses():
    """A channel constant in domain B (a colour channel under grayscale) has an enormous
    Gaussian KL; the channel mean follows it, the median does not."""
    from classify.analysis import channel_sym_kl, gaussian_sym_kl

    g = torch.Generator().manual_seed(0)
    a = torch.randn(500, 8, generator=g)
    b = torch.randn(500, 8, generator=g)
    b[:, 3] = 0.5  # collapsed in B
    kl = channel_sym_kl(a, b)
    assert kl.shape == (8,) and kl[3] > 1e4 and float(kl.median()) < 0.1
    assert gaussian_sym_kl(a, b) == pytest.approx(float(kl.mean())) and gaussian_sym_kl(a, b) > 1e3


def test_shift_table_and_predict():
    clfs = [_clf("bn"), _clf("bin")]
    t = shift_table(clfs, _ds(), ["rgb_plus", "grayscale=0.5"])
    assert t.conditions == ["clean", "rgb_plus", "grayscale=0.5"]
    assert set(t.acc) == {"r20-bn", "r20-bin"} and 0 <= t.acc["r20-bn"]["rgb_plus"] <= 100
    assert t.to_markdown().count("\n") == 3
    top = classify.predict(clfs[0], _img(size=40), topk=2)
    assert len(top) == 2 and top[0][1] >= top[1][1] and top[0][0] in clfs[0].class_names


@pytest.fixture
def saved(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    clf = _clf()
    path = classify.save_classifier(tmp_path / "toy.safetensors", clf.model,
                                    class_names=clf.class_names, mean=clf.mean, std=clf.std,
                                    image_size=16)
    ds = _ds()
    for i in range(len(ds)):
        d = tmp_path / "test" / ds.classes[int(ds.y[i])]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(ds.x[i].permute(1, 2, 0).numpy()).save(d / f"{i}.png")
    return path, tmp_path


def _run(args):
    import main

    res = CliRunner().invoke(main.app, ["--device", "cpu", *args])
    return res.exit_code, res.output + (getattr(res, "stderr", "") or "")


def test_cli_eval_shift_gates_divergence_predict(saved):
    path, tmp = saved
    data = f"folder:{tmp / 'test'}"
    code, out = _run(["classify", "eval", str(path), "--data", data])
    assert code == 0 and "| toy | test | 12 |" in out, out
    code, out = _run(["classify", "shift", str(path), "--data", data, "--shifts", "rgb_plus,jpeg=20",
                      "--plot", str(tmp / "s.png"), "--out", str(tmp / "s.md")])
    assert code == 0 and (tmp / "s.png").stat().st_size > 1000 and "jpeg=20" in (tmp / "s.md").read_text(), out
    code, out = _run(["classify", "gates", str(path), "--plot", str(tmp / "g.png")])
    assert code == 0 and (tmp / "g.png").is_file() and "layer1.0.bn1" in out, out
    code, out = _run(["classify", "divergence", str(path), "--data", data, "--domains",
                      "test,shift:grayscale", "--plot", str(tmp / "d.png")])
    assert code == 0 and (tmp / "d.png").is_file() and "layer3.2" in out, out
    img = next((tmp / "test" / "c0").iterdir())
    code, out = _run(["classify", "predict", str(path), str(img), "--topk", "2"])
    assert code == 0 and out.count(" c") >= 2, out


def test_cli_errors_are_one_line(saved):
    path, tmp = saved
    Image.new("RGB", (8, 8)).save(tmp / "x.jpg")
    code, out = _run(["classify", "predict", str(tmp / "nope.safetensors"), str(tmp / "x.jpg")])
    assert code == 2 and "error: model file" in out and "not found" in out and "Traceback" not in out
    (tmp / "bad.jpg").write_bytes(b"garbage")
    code, out = _run(["classify", "predict", str(path), str(tmp / "bad.jpg")])
    assert code == 2 and "skipped:" in out and "error: 1 of 1 files could not be read" in out
    code, out = _run(["classify", "shift", str(path), "--data", f"folder:{tmp / 'test'}",
                      "--shifts", "sepia"])
    assert code == 2 and "error: unknown shift 'sepia'" in out
    bn = _clf("bn")
    p2 = classify.save_classifier(tmp / "bn.safetensors", bn.model, class_names=bn.class_names,
                                  mean=bn.mean, std=bn.std, image_size=16)
    code, out = _run(["classify", "gates", str(p2)])
    assert code == 2 and "no BIN gates" in out


@pytest.mark.parametrize("spec,msg", [("jpeg=1000", "jpeg shift strength must be from 1 to 95"),
                                      ("hue=nan", "hue shift strength"),
                                      ("gamma=-1", "gamma shift strength"),
                                      ("style:candy_bin=2", "style shift strength must be from 0 to 1")])
def test_shift_strength_out_of_range_is_refused(spec, msg):
    from classify.shift import apply_shift, parse_shift

    with pytest.raises(ValueError, match=msg):
        parse_shift(spec)
    name, _, val = spec.partition("=")
    with pytest.raises(ValueError, match=msg):
        apply_shift(Image.new("RGB", (8, 8)), name, float(val))
