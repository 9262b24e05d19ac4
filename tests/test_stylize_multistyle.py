"""Multi-style training (conditional norms, Dumoulin et al. 2017), norm-only fine-tuning, style
selection and blending, the multi-scale style loss, and early-output sanity with real VGG."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import need_shared
from PIL import Image
from typer.testing import CliRunner

import engine.io
import main
import norms
from stylize.losses import PerceptualLoss, gram_matrix
from stylize.model import (
    StyleConfig,
    TransformerNet,
    list_style_models,
    style_selection,
    use_style,
)
from stylize.train import StyleSchedule, TrainConfig, train
from test_stylize_train import TinyEncoder


@pytest.fixture
def images(tmp_path: Path) -> tuple[list[Path], Path]:
    """Six small content photos and three style images (stripes, checks, blobs)."""
    rng = np.random.default_rng(0)
    content = tmp_path / "content"
    content.mkdir()
    for i in range(6):
        yy, xx = np.mgrid[0:40, 0:48]
        arr = np.stack([(xx * (i + 1) * 5) % 256, (yy * 7 + i * 30) % 256,
                        rng.integers(0, 256, (40, 48))], -1).astype(np.uint8)
        Image.fromarray(arr).save(content / f"img{i}.png")
    yy, xx = np.mgrid[0:64, 0:64]
    patterns = {"stripes": ((xx + yy) // 4 % 2 * 255), "checks": ((xx // 8 + yy // 8) % 2 * 255),
                "blobs": (np.sin(xx / 5.0) * np.cos(yy / 7.0) * 127 + 128)}
    styles = []
    for k, (name, p) in enumerate(patterns.items()):
        p = p.astype(np.uint8)
        path = tmp_path / f"{name}.png"
        Image.fromarray(np.stack([p, np.roll(p, 3 * k, 0), 255 - p], -1)).save(path)
        styles.append(path)
    return styles, content


def _cfg(styles, content, out, **kw) -> TrainConfig:
    base = dict(style_image=[str(s) for s in styles], content_dir=str(content), out=str(out),
                norm="bin", image_size=32, batch_size=2, steps=12, lr=5e-3, content_weight=1.0,
                style_weight=50.0, seed=3, device="cpu", checkpoint_every=4, base_channels=8,
                num_residual=1)
    base.update(kw)
    return TrainConfig(**base)


def _run(cfg: TrainConfig, **kw) -> Path:
    return train(cfg, encoder=TinyEncoder(), show_bar=False, **kw)


def test_style_schedule_is_balanced_and_a_function_of_seed_and_step():
    a, b = StyleSchedule(3, seed=5), StyleSchedule(3, seed=5)
    seq = [a(s) for s in range(30)]
    for r in range(10):
        assert sorted(seq[3 * r:3 * r + 3]) == [0, 1, 2]  # every round visits each style once
    assert [b(s) for s in reversed(range(30))] == seq[::-1]  # order of calls does not matter
    assert seq != [StyleSchedule(3, seed=6)(s) for s in range(30)]
    assert [StyleSchedule(1, seed=5, first=4)(s) for s in range(3)] == [4, 4, 4]


def test_two_styles_train_one_conditional_network_and_resume_exactly(images, tmp_path):
    styles, content = images
    full = _run(_cfg(styles[:2], content, tmp_path / "a"))
    tensors, meta = engine.io.load_safetensors(full)
    assert meta["config"]["norm"] == "cbin" and meta["config"]["num_styles"] == 2
    assert meta["styles"] == ["stripes", "checks"]
    assert tensors["in1.weight"].shape == (2, 8) and tensors["in1.gate"].shape == (2, 8)
    assert not torch.equal(tensors["in1.bias"][0], tensors["in1.bias"][1])  # each row trained
    logged = [json.loads(l)["style"] for l in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    assert sorted(logged) == [0.0] * 6 + [1.0] * 6

    count = {"n": 0}
    _run(_cfg(styles[:2], content, tmp_path / "b"),
         progress=lambda event: count.__setitem__("n", event.step),
         should_stop=lambda: count["n"] >= 7)
    assert engine.io.load_torch(tmp_path / "b" / "checkpoint.pt")["step"] == 7
    resumed = _run(_cfg(styles[:2], content, tmp_path / "b"), resume=True)
    b, _ = engine.io.load_safetensors(resumed)
    assert set(tensors) == set(b)
    for k in tensors:
        assert torch.equal(tensors[k], b[k]), k


def test_norm_only_fine_tuning_changes_only_the_new_style_row(images, tmp_path):
    styles, content = images
    base = _run(_cfg(styles[:2], content, tmp_path / "base", steps=6))
    before, _ = engine.io.load_safetensors(base)
    tuned = _run(_cfg(styles[2:], content, tmp_path / "new", from_model=str(base), steps=6,
                      checkpoint_every=0))
    after, meta = engine.io.load_safetensors(tuned)
    assert meta["styles"] == ["stripes", "checks", "blobs"] and meta["config"]["num_styles"] == 3
    # the run's config.json names the network's norm (from the base model), not --norm's value
    shown = json.loads((tmp_path / "new" / "config.json").read_text())
    assert shown["norm"] == meta["config"]["norm"] == "cbin"
    net = TransformerNet(config=StyleConfig.from_dict(meta["config"]))
    norm_names = {n for n, _ in norms.named_norm_parameters(net)}
    assert norm_names and set(after) == set(before)
    for k, v in before.items():
        if k in norm_names:  # old rows kept, new row trained away from its initial mean
            assert after[k].shape[0] == 3 and torch.equal(after[k][:2], v), k
            init = v.mean(0)
            assert not torch.allclose(after[k][2], init) or k.endswith("gate"), k
        else:  # convolutions and running statistics untouched
            assert torch.equal(after[k], v), k
    # the old styles render exactly as before
    x = torch.rand(1, 3, 32, 32) * 255
    old = TransformerNet(config=StyleConfig.from_dict(
        engine.io.load_safetensors(base)[1]["config"]))
    old.load_state_dict(before)
    net.load_state_dict(after)
    old.eval(), net.eval()
    with torch.no_grad(), use_style(old, "checks", ["stripes", "checks"]), \
            use_style(net, "checks", meta["styles"]):
        assert torch.equal(old(x), net(x))


def test_train_all_fine_tunes_convolutions_too(images, tmp_path):
    styles, content = images
    base = _run(_cfg(styles[:1], content, tmp_path / "base", norm="in", steps=3))
    before, _ = engine.io.load_safetensors(base)
    tuned = _run(_cfg(styles[1:2], content, tmp_path / "all", from_model=str(base), steps=3,
                      train_all=True))
    after, meta = engine.io.load_safetensors(tuned)
    # a single-style model becomes conditional: its style is row 0, the new one row 1
    assert meta["config"]["norm"] == "cin" and meta["styles"] == ["stripes", "checks"]
    assert not torch.equal(before["conv1.conv2d.weight"], after["conv1.conv2d.weight"])
    with pytest.raises(ValueError, match="already has a style named 'stripes'.*--train-all"):
        _run(_cfg(styles[:1], content, tmp_path / "dup", from_model=str(base), steps=1))


def test_train_all_keeps_training_a_style_of_the_same_name(images, tmp_path):
    """--train-all with the model's own style plus a new one: the old style keeps its row (and is
    trained), the new one gets a row; no duplicate rows."""
    styles, content = images
    base = _run(_cfg(styles[:1], content, tmp_path / "base", norm="in", steps=3))
    before, _ = engine.io.load_safetensors(base)
    tuned = _run(_cfg([styles[1], styles[0]], content, tmp_path / "both", from_model=str(base),
                      steps=4, train_all=True))
    after, meta = engine.io.load_safetensors(tuned)
    assert meta["styles"] == ["stripes", "checks"] and meta["config"]["num_styles"] == 2
    assert after["in1.weight"].shape == (2, 8) and before["in1.weight"].shape == (8,)
    # the stripes row (0) was trained too: it moved away from the single-style model's γ
    assert not torch.equal(after["in1.weight"][0].float(), before["in1.weight"].float())
    rows = [json.loads(line)["style"] for line in (tmp_path / "both" / "metrics.jsonl")
            .read_text().splitlines() if "style" in json.loads(line)]
    assert sorted(set(rows)) == [0.0, 1.0]  # both rows trained, checks is row 1
    with pytest.raises(ValueError, match="--train-all"):
        _cfg(styles[:1], content, tmp_path / "x", train_all=True).validate()


def test_style_selection_and_blends():
    names = ["candy", "mosaic", "wave"]
    assert style_selection(None, names) == 0 and style_selection("Mosaic", names) == 1
    assert style_selection("2", names) == 2
    w = style_selection("candy:1,wave:3", names)
    assert torch.allclose(w, torch.tensor([0.25, 0.0, 0.75]))
    for bad, msg in [("starry", "no style 'starry'"), ("candy:-1,wave:1", "≥ 0"),
                     ("candy:x", "not a number"), (5, "does not exist")]:
        with pytest.raises(ValueError, match=msg):
            style_selection(bad, names)
    net = TransformerNet(config=StyleConfig("cbin", 8, 1, num_styles=3, output="residual"))
    with torch.no_grad():
        for _, layer in norms.conditional_layers(net):
            layer.weight.normal_(1, 0.3)
            layer.bias.normal_(0, 0.3)
        net.deconv3.conv2d.weight.normal_(0, 0.05)
    net.eval()
    x = torch.rand(2, 3, 24, 24) * 255
    with torch.no_grad():
        outs = []
        for k in range(3):
            with use_style(net, names[k], names):
                outs.append(net(x))
        with use_style(net, "mosaic:1,candy:0", names):  # weight 1/0 = the pure style
            assert torch.allclose(net(x), outs[1], atol=1e-4)
        with use_style(net, "candy:0.5,mosaic:0.5", names):
            mid = net(x)
    assert not torch.allclose(outs[0], outs[1], atol=1e-2)
    assert not torch.allclose(mid, outs[0], atol=1e-2) and not torch.allclose(mid, outs[1], atol=1e-2)
    plain = TransformerNet(config=StyleConfig("in", 8, 1))
    with pytest.raises(ValueError, match="one style"):
        with use_style(plain, "mosaic", ["candy"]):
            pass


@pytest.mark.parametrize("output", ["residual", "additive"])
def test_photo_heads_start_as_the_identity(output):
    net = TransformerNet(config=StyleConfig("bin", 8, 1, output=output)).eval()
    x = torch.rand(2, 3, 30, 41) * 255
    assert torch.allclose(net(x), x, atol=1e-3)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # the skip stays float32: 0–255 exact
        assert torch.allclose(net(x).float(), x, atol=1e-3)


def test_multi_scale_style_loss_matches_its_formula():
    enc = TinyEncoder()
    g = torch.Generator().manual_seed(0)
    s1, s2 = torch.rand(1, 3, 64, 64, generator=g) * 255, torch.rand(1, 3, 48, 64, generator=g) * 255
    y, x = torch.rand(2, 3, 32, 32, generator=g) * 255, torch.rand(2, 3, 32, 32, generator=g) * 255
    loss = PerceptualLoss(enc, [s1, s2], ["t1", "t2"], "t2", 1.0, 1.0, style_scales=[1, 2])
    got = loss(y, x, style=1)["style_loss"]

    def single(f):
        fy, fs = enc(F.avg_pool2d(y, f) if f > 1 else y), enc(F.avg_pool2d(s2, f) if f > 1 else s2)
        return sum(F.mse_loss(gram_matrix(fy[t]), gram_matrix(fs[t]).expand(2, -1, -1))
                   for t in ("t1", "t2"))

    assert torch.allclose(got, (single(1) + single(2)) / 2, rtol=1e-5)
    one = PerceptualLoss(enc, s2, ["t1", "t2"], "t2", 1.0, 1.0)
    assert torch.allclose(one(y, x)["style_loss"], single(1), rtol=1e-5)
    with pytest.raises(ValueError, match="style scale 4 leaves 8 px"):
        TrainConfig(style_image="a.jpg", content_dir="c", image_size=32, style_scales=[1, 4]).validate()


@pytest.mark.parametrize("relative", [False, True])
def test_per_style_weights_scale_only_their_style_term(relative):
    enc = TinyEncoder()
    g = torch.Generator().manual_seed(1)
    s1, s2 = torch.rand(1, 3, 48, 48, generator=g) * 255, torch.rand(1, 3, 48, 48, generator=g) * 255
    y, x = torch.rand(2, 3, 32, 32, generator=g) * 255, torch.rand(2, 3, 32, 32, generator=g) * 255
    plain = PerceptualLoss(enc, [s1, s2], ["t1", "t2"], "t2", 1.0, 3.0, relative=relative)
    tuned = PerceptualLoss(enc, [s1, s2], ["t1", "t2"], "t2", 1.0, 3.0, relative=relative,
                           style_multipliers=[1.0, 2.5])
    for k, m in ((0, 1.0), (1, 2.5)):
        a, b = plain(y, x, style=k), tuned(y, x, style=k)
        assert torch.allclose(b["style_loss"], m * a["style_loss"], rtol=1e-5)
        assert torch.equal(b["content_loss"], a["content_loss"])
    both = tuned(y, x, style=torch.tensor([1, 1]))["style_loss"]
    assert torch.allclose(both, 2.5 * plain(y, x, style=1)["style_loss"], rtol=1e-5)
    with pytest.raises(ValueError, match="1 style multiplier"):
        PerceptualLoss(enc, [s1, s2], ["t1"], "t1", 1.0, 1.0, style_multipliers=[2.0])


def test_style_weights_option_is_checked_and_recorded(images, tmp_path):
    styles, content = images
    with pytest.raises(ValueError, match="1 number.s. for 2 style image"):
        _cfg(styles[:2], content, tmp_path / "x", style_weights=[2.0]).validate()
    with pytest.raises(ValueError, match="style weights"):
        _cfg(styles[:2], content, tmp_path / "x", style_weights=[1.0, -1.0]).validate()
    _run(_cfg(styles[:2], content, tmp_path / "w", steps=2, style_weights=[1.0, 3.0]))
    assert json.loads((tmp_path / "w" / "config.json").read_text())["style_weights"] == [1.0, 3.0]
    r = CliRunner().invoke(main.app, ["stylize", "train", "--style-image", str(styles[0]),
                                      str(styles[1]), "--content", str(content), "--style-weights",
                                      "1,2,3", "--out", str(tmp_path / "cli")])
    assert r.exit_code != 0 and "3 number(s) for 2 style image(s)" in r.output


def test_list_shows_shipped_and_local_models(images, tmp_path):
    styles, content = images
    _run(_cfg(styles[:2], content, tmp_path / "runs" / "duo", steps=2))
    found = {m.name: m for m in list_style_models(tmp_path / "runs")}
    assert found["duo"].styles == ["stripes", "checks"] and found["duo"].source == "local"
    assert found["duo"].norm == "cbin"
    r = CliRunner().invoke(main.app, ["stylize", "list", "--runs", str(tmp_path / "runs")])
    assert r.exit_code == 0 and "duo" in r.output and "stripes, checks" in r.output


def test_early_outputs_are_neither_black_nor_constant(images, tmp_path):
    """The residual head, 30 steps at 64 px with the real loss network: the output looks like a
    picture (the linear head, the default since the heads that start as the photo stay near it,
    gives near-black images with streaks this early)."""
    vgg = need_shared("weights", "vgg19_normalised_relu3_1.pth")
    styles, content = images
    for i in range(4):  # 64 px photos: smooth gradients and shapes
        yy, xx = np.mgrid[0:80, 0:96]
        arr = np.stack([xx * 2 + i * 20, yy * 3, ((xx - 48) ** 2 + (yy - 40) ** 2 < 400) * 200 + 30],
                       -1).clip(0, 255).astype(np.uint8)
        Image.fromarray(arr).save(content / f"photo{i}.png")
    cfg = _cfg(styles[:1], content, tmp_path / "early", norm="in", image_size=64, steps=30,
               lr=1e-3, content_weight=None, style_weight=None, checkpoint_every=0,
               base_channels=16, num_residual=2, vgg_weights=str(vgg), output="residual")
    path = train(cfg, show_bar=False)
    tensors, meta = engine.io.load_safetensors(path)
    net = TransformerNet(config=StyleConfig.from_dict(meta["config"]))
    net.load_state_dict(tensors)
    x = torch.from_numpy(np.array(Image.open(content / "photo1.png"))).permute(2, 0, 1)[None].float()
    with torch.no_grad():
        y = net.eval()(x).clamp(0, 255)
    assert y.mean() > 40, f"output is nearly black (mean {y.mean():.1f})"
    assert y.std() > 10, f"output is nearly constant (std {y.std():.1f})"
    assert y.std(dim=(2, 3)).min() > 5  # no channel collapsed to one value
    style = [json.loads(l)["style_loss"] for l in (tmp_path / "early" / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(style[-5:]) < np.mean(style[:5])  # and it is learning the style


def test_cli_trains_several_styles_given_after_one_flag(images, tmp_path):
    vgg = need_shared("weights", "vgg19_normalised_relu3_1.pth")
    styles, content = images
    out = tmp_path / "cli"
    r = CliRunner().invoke(main.app, [
        "--device", "cpu", "stylize", "train", "--style-image", str(styles[0]), str(styles[1]),
        "--content", str(content), "--norm", "bin", "--out", str(out), "--image-size", "32",
        "--batch-size", "2", "--steps", "2", "--vgg-weights", str(vgg), "--style-scales", "1,2"])
    assert r.exit_code == 0, r.output
    _, meta = engine.io.load_safetensors(out / "model.safetensors")
    assert meta["styles"] == ["stripes", "checks"] and meta["config"]["norm"] == "cbin"
    assert meta["recipe"]["style_scales"] == [1, 2]


def test_run_style_option_picks_and_blends(tmp_path):
    """`stylize run --style` renders the named style; a blend lies between; a bad name is one
    line before any output is written."""
    from stylize.model import StyleConfig, TransformerNet
    from stylize.train import save_model

    torch.manual_seed(0)
    net = TransformerNet(config=StyleConfig("cin", base_channels=8, num_residual=1, num_styles=2))
    with torch.no_grad():
        net.deconv3.conv2d.weight.mul_(20)
        for name, p in net.named_parameters():
            if name.endswith(".bias") and p.ndim == 2:  # S×C tables: make the two styles differ
                p[1].add_(1.0)
    path = save_model(tmp_path / "two.safetensors", net.eval(), {"styles": ["sun", "rain"]})
    src = tmp_path / "in.png"
    Image.fromarray((np.random.default_rng(0).random((40, 48, 3)) * 255).astype(np.uint8)).save(src)
    outs = {}
    for style in ("sun", "rain", "sun:0.5,rain:0.5"):
        dst = tmp_path / f"{style.replace(':', '_').replace(',', '_')}.png"
        r = CliRunner().invoke(main.app, ["--device", "cpu", "stylize", "run", "--model", str(path),
                                          "--style", style, "-o", str(dst), str(src)])
        assert r.exit_code == 0, r.output
        outs[style] = np.asarray(Image.open(dst)).astype(float)
    assert np.abs(outs["sun"] - outs["rain"]).mean() > 1.0
    mid = outs["sun:0.5,rain:0.5"]
    assert np.abs(mid - outs["sun"]).mean() < np.abs(outs["rain"] - outs["sun"]).mean()
    bad = tmp_path / "bad.png"
    r = CliRunner().invoke(main.app, ["--device", "cpu", "stylize", "run", "--model", str(path),
                                      "--style", "snow", "-o", str(bad), str(src)])
    assert r.exit_code == 2 and "snow" in r.output and not bad.exists()
    # compare --styles: one cell per style of the one model, laid out after the input
    grid = tmp_path / "grid.png"
    r = CliRunner().invoke(main.app, ["--device", "cpu", "stylize", "compare", "--models",
                                      str(path), "--styles", "sun;rain", "-o", str(grid), str(src)])
    assert r.exit_code == 0, r.output
    g = np.asarray(Image.open(grid)).astype(float)
    pad, label_h, h, w = 8, 22, 40, 48
    cell = [g[pad:pad + h, pad + k * (w + pad):pad + k * (w + pad) + w] for k in range(3)]
    for k, style in ((1, "sun"), (2, "rain")):
        assert np.abs(cell[k] - outs[style]).mean() < 1.0, style
    r = CliRunner().invoke(main.app, ["--device", "cpu", "stylize", "compare", "--models",
                                      f"{path},{path}", "--styles", "sun;rain;sun", "-o",
                                      str(tmp_path / "no.png"), str(src)])
    assert r.exit_code == 2 and "--styles has 3 entries for 2 models" in r.output


def test_merge_joins_separately_fine_tuned_styles(images, tmp_path):
    """Two norm-only fine-tunes of one single-style base merge into one 3-style model whose
    every style renders exactly as in its source model; anything else is refused."""
    from typer.testing import CliRunner

    import main
    from stylize.model import load_style_net, merge_styles

    styles, content = images
    base = _run(_cfg(styles[:1], content, tmp_path / "base", steps=3))
    a = _run(_cfg(styles[1:2], content, tmp_path / "a", from_model=str(base), steps=3,
                  checkpoint_every=0))
    b = _run(_cfg(styles[2:], content, tmp_path / "b", from_model=str(base), steps=3,
                  checkpoint_every=0))
    out = tmp_path / "merged.safetensors"
    r = CliRunner().invoke(main.app, ["stylize", "merge", str(a), str(b), "-o", str(out)])
    assert r.exit_code == 0, r.output
    merged, meta = load_style_net(out)
    assert meta["styles"] == ["stripes", "checks", "blobs"]
    x = torch.rand(2, 3, 32, 32) * 255
    for src, name in ((a, "stripes"), (a, "checks"), (b, "blobs")):
        net, m = load_style_net(src)
        with torch.no_grad(), use_style(net.eval(), name, m["styles"]), \
                use_style(merged.eval(), name, meta["styles"]):
            assert torch.equal(net(x), merged(x)), name
    # a model trained on its own (other convolutions) cannot be merged
    other = _run(_cfg(styles[1:2], content, tmp_path / "other", steps=3, seed=9))
    with pytest.raises(ValueError, match="not fine-tuned from one base"):
        merge_styles([a, other])
    r = CliRunner().invoke(main.app, ["stylize", "merge", str(a), str(b), "-o", str(out)])
    assert r.exit_code != 0 and "exists" in r.output


def test_fp16_export_keeps_a_running_variance_fp16_cannot_hold(images, tmp_path):
    """A first-layer BN variance of 0–255 pixels can exceed fp16's 65504: the shipped file must
    keep it (fp32), not store inf, which zeroes that channel's BN branch at inference."""
    from stylize.model import load_style_net
    from stylize.train import save_model
    styles, content = images
    base = _run(_cfg(styles[:1], content, tmp_path / "base", steps=2))
    net, meta = load_style_net(base)
    with torch.no_grad():
        net.in1.running_var[0] = 2.0e5
    half = save_model(tmp_path / "half.safetensors", net, {"styles": meta["styles"]}, half=True)
    tensors, _ = engine.io.load_safetensors(half)
    assert tensors["in1.running_var"][0].item() == pytest.approx(2.0e5)
    assert tensors["conv1.conv2d.weight"].dtype == torch.float16  # the rest is still halved


def test_training_all_from_a_model_with_an_inf_running_variance_stays_finite(images, tmp_path):
    """Older fp16 files hold such a variance as inf; a running average starting at inf turns
    NaN (inf − inf) and the network's eval output black. Training on from it must not."""
    styles, content = images
    base = _run(_cfg(styles[:1], content, tmp_path / "base", steps=2))
    tensors, meta = engine.io.load_safetensors(base)
    tensors["in1.running_var"][0] = float("inf")
    bad = tmp_path / "inf.safetensors"
    engine.io.save_safetensors(bad, tensors, meta)
    tuned = _run(_cfg(styles[:1], content, tmp_path / "tuned", from_model=str(bad), steps=3,
                      train_all=True))
    after, _ = engine.io.load_safetensors(tuned)
    assert all(bool(torch.isfinite(v.float()).all()) for v in after.values())
