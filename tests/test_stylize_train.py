"""Training: loss goes down, exact resume, atomic checkpoints, NaN stop, VGG weight handling.

The loss network here is a tiny fixed random conv stack handed to ``train`` through its explicit
``encoder`` test hook; the product itself only ever loads real VGG weights.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import need_shared
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import main
import engine.io
from stylize.losses import encoder_from_state_dict, load_vgg_encoder
from stylize.train import TrainConfig, train

import stylize.train as st  # noqa: E402  (the training module)


class TinyEncoder(nn.Module):
    """Random but fixed (seeded) two-layer conv features, for tests only."""

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(123)
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        with torch.no_grad():
            for c in (self.c1, self.c2):
                c.weight.copy_(torch.randn(c.weight.shape, generator=g) * 0.3)
                c.bias.zero_()
        self.taps = ["t1", "t2"]
        self.requires_grad_(False)

    def forward(self, x):  # N×3×H×W (0–255) -> {tap: features}
        h1 = F.relu(self.c1(x / 255.0))
        return {"t1": h1, "t2": F.relu(self.c2(h1))}


@pytest.fixture
def images(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    content = tmp_path / "content" / "sub"
    content.mkdir(parents=True)
    for i in range(6):
        yy, xx = np.mgrid[0:40, 0:48]
        arr = np.stack([(xx * (i + 1) * 5) % 256, (yy * 7 + i * 30) % 256,
                        rng.integers(0, 256, (40, 48))], -1).astype(np.uint8)
        Image.fromarray(arr).save(content / f"img{i}.png")
    (content / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    style = tmp_path / "style.png"
    yy, xx = np.mgrid[0:64, 0:64]
    stripes = ((xx + yy) // 4 % 2 * 255).astype(np.uint8)
    Image.fromarray(np.stack([stripes, 255 - stripes, stripes // 2], -1)).save(style)
    return style, tmp_path / "content"


def _cfg(images, out, **kw) -> TrainConfig:
    style, content = images
    base = dict(style_image=str(style), content_dir=str(content), out=str(out), norm="in",
                image_size=32, batch_size=2, steps=30, lr=5e-3, content_weight=1.0,
                style_weight=50.0, seed=3, device="cpu", checkpoint_every=10,
                base_channels=8, num_residual=1)
    base.update(kw)
    return TrainConfig(**base)


def _losses(out: Path, key: str) -> list[float]:
    return [json.loads(l)[key] for l in (out / "metrics.jsonl").read_text().splitlines()]


def test_thirty_steps_lower_the_style_loss(images, tmp_path):
    out = tmp_path / "run"
    seen = []
    # the linear head (the default) starts far from the style (black), so 30 steps must cut its
    # style loss a lot; the residual head starts at the photo: see test_early_outputs_*
    path = train(_cfg(images, out), progress=seen.append, encoder=TinyEncoder(), show_bar=False)
    style = _losses(out, "style_loss")
    assert len(style) == 30 and [p.step for p in seen] == list(range(1, 31))
    assert {"content_loss", "style_loss"} <= set(seen[-1].metrics) and seen[-1].total == 30
    assert np.mean(style[-5:]) < 0.7 * np.mean(style[:5])
    tensors, meta = engine.io.load_safetensors(path)
    assert meta["config"]["norm"] == "in" and meta["style"] == "style" and meta["steps"] == 30
    assert meta["recipe"]["image_size"] == 32
    # the default head is the linear one: the residual head paints black holes (reports/style-quality)
    assert meta["config"]["output"] == meta["recipe"]["output"] == "linear"
    assert meta["final_losses"]["skipped_files"] == 1.0  # broken.jpg skipped, not a crash


@pytest.mark.parametrize("norm", ["bin", "bn"])
def test_resume_equals_uninterrupted(images, tmp_path, norm):
    full = train(_cfg(images, tmp_path / "a", norm=norm, steps=12, checkpoint_every=4),
                 encoder=TinyEncoder(), show_bar=False)
    count = {"n": 0}

    def progress(event):
        count["n"] = event.step

    train(_cfg(images, tmp_path / "b", norm=norm, steps=12, checkpoint_every=4),
          progress=progress, should_stop=lambda: count["n"] >= 7, encoder=TinyEncoder(),
          show_bar=False)
    assert engine.io.load_torch(tmp_path / "b" / "checkpoint.pt")["step"] == 7
    resumed = train(_cfg(images, tmp_path / "b", norm=norm, steps=12, checkpoint_every=4),
                    resume=True, encoder=TinyEncoder(), show_bar=False)
    a, _ = engine.io.load_safetensors(full)
    b, meta = engine.io.load_safetensors(resumed)
    assert meta["steps"] == 12 and set(a) == set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _losses(tmp_path / "a", "loss") == _losses(tmp_path / "b", "loss")
    if norm == "bin":
        gates = [v for k, v in b.items() if k.endswith(".gate")]
        assert gates and all(((g >= 0) & (g <= 1)).all() for g in gates)
        assert any((g < 1).any() for g in gates)  # ρ moved, and stayed clipped


def test_checkpoint_write_is_atomic(images, tmp_path, monkeypatch):
    out = tmp_path / "run"
    calls = {"n": 0}
    real_save = torch.save

    def flaky_save(obj, f, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            Path(f).write_bytes(b"half a checkpoint")
            raise OSError("disk full")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", flaky_save)
    with pytest.raises(OSError, match="disk full"):
        train(_cfg(images, out, steps=20, checkpoint_every=5), encoder=TinyEncoder(),
              show_bar=False)
    assert engine.io.load_torch(out / "checkpoint.pt")["step"] == 5
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert not (out / "model.safetensors").exists()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(images, tmp_path, monkeypatch):
    real = st.PerceptualLoss.forward
    calls = {"n": 0}

    def poisoned(self, y, x, **kw):
        calls["n"] += 1
        out = real(self, y, x, **kw)
        if calls["n"] == 7:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(st.PerceptualLoss, "forward", poisoned)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="nan at step 7"):
        train(_cfg(images, out, checkpoint_every=5), encoder=TinyEncoder(), show_bar=False)
    assert engine.io.load_torch(out / "checkpoint.pt")["step"] == 5


def test_no_vgg_weights_is_one_clear_line(images, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    with pytest.raises(ValueError, match="--vgg-weights"):
        load_vgg_encoder(None)
    style, content = images
    r = CliRunner().invoke(main.app, ["--device", "cpu", "stylize", "train", "--style-image",
                                      str(style), "--content", str(content), "--out",
                                      str(tmp_path / "x"), "--steps", "1"])
    assert r.exit_code == 2
    lines = [l for l in r.output.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: no VGG weights")
    assert not (tmp_path / "x" / "model.safetensors").exists()


def test_torchvision_vgg_state_dict_prefix_is_accepted():
    import torchvision

    feats = torchvision.models.vgg16(weights=None).features[:10]
    sd = {f"features.{k}": v for k, v in feats.state_dict().items()}
    enc = encoder_from_state_dict(sd)
    assert enc.kind == "torchvision-vgg16"
    assert enc.spec.style_layers == ["relu1_2", "relu2_2"] and enc.spec.content_layer == "relu2_2"
    x = torch.rand(1, 3, 32, 32) * 255
    ref = feats[:4]((x / 255 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
                    / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))
    assert torch.allclose(enc(x)["relu1_2"], ref, atol=1e-4)
    with pytest.raises(ValueError):
        encoder_from_state_dict({"fc.weight": torch.zeros(3, 3)})


def test_normalised_vgg19_encoder_loads():
    path = need_shared("weights", "vgg19_normalised_relu3_1.pth")
    enc = load_vgg_encoder(path)
    assert enc.kind == "normalised-vgg19"
    assert enc.spec.style_layers == ["relu1_1", "relu2_1", "relu3_1"]
    sd = torch.load(path, weights_only=True)
    x = torch.rand(1, 3, 16, 16) * 255
    h = F.conv2d(x / 255, sd["conv1.weight"], sd["conv1.bias"])
    ref = F.relu(F.conv2d(F.pad(h, (1, 1, 1, 1), mode="reflect"), sd["conv2.weight"], sd["conv2.bias"]))
    feats = enc(x)
    assert torch.allclose(feats["relu1_1"], ref, atol=1e-3)
    assert feats["relu3_1"].shape == (1, 256, 4, 4)


def test_library_resume_refuses_a_different_norm_even_if_it_is_the_default(images, tmp_path):
    """Passing norm="in" (the default) against a bin checkpoint is a conflict, not ignored."""
    out = tmp_path / "r"
    train(_cfg(images, out, norm="bin", steps=2), encoder=TinyEncoder(), show_bar=False)
    with pytest.raises(ValueError, match="--norm 'in' conflicts with the checkpoint's 'bin'"):
        train(_cfg(images, out, norm="in", steps=4), resume=True, encoder=TinyEncoder(),
              show_bar=False)


def test_a_run_folder_exports_its_newest_checkpoint(images, tmp_path):
    """`stylize export RUN` (or RUN/checkpoint.pt): the newest checkpoint's weights as a model
    that rebuilds itself, with the steps so far and ``finished`` false: a long run looked at
    (or scored) before it ends. An empty folder is one error line."""
    out = tmp_path / "run"
    count = {"n": 0}

    def progress(event):
        count["n"] = event.step

    stopped = train(_cfg(images, out, norm="bin", steps=12, checkpoint_every=4),
                    progress=progress, should_stop=lambda: count["n"] >= 6,
                    encoder=TinyEncoder(), show_bar=False)
    runner = CliRunner()
    for src in (out, out / "checkpoint.pt"):
        dst = tmp_path / f"mid_{src.name}.safetensors"
        r = runner.invoke(main.app, ["stylize", "export", str(src), str(dst), "--no-half"])
        assert r.exit_code == 0, r.output
        want, _ = engine.io.load_safetensors(stopped)  # what the stopped run wrote at step 6
        got, meta = engine.io.load_safetensors(dst)
        assert set(got) == set(want) and all(torch.equal(got[k], want[k]) for k in want)
        assert meta["steps"] == 6 and meta["finished"] is False
        assert meta["config"]["norm"] == "bin" and meta["recipe"]["steps"] == 12
    (tmp_path / "empty").mkdir()
    r = runner.invoke(main.app, ["stylize", "export", str(tmp_path / "empty"),
                                 str(tmp_path / "x.safetensors")])
    assert r.exit_code != 0 and "Traceback" not in r.output
    # the path may be shortened in the message; the reason is not
    assert "does not exist (safetensors export copies a model file or a run's checkpoint)" \
        in r.output and len(r.output.strip().splitlines()) == 1


def test_content_layer_option_picks_the_content_tap(images, tmp_path):
    """--content-layer: the content loss compares that loss-network layer (default: the deepest
    tap with this encoder); a layer the network lacks is one clear error naming its layers."""
    enc = TinyEncoder()
    _, default = st.training_loss(_cfg(images, tmp_path / "a", loss="relative"), enc)
    assert default.content_layer == "t2"
    _, shallow = st.training_loss(_cfg(images, tmp_path / "b", loss="relative",
                                       content_layer="t1"), enc)
    assert shallow.content_layer == "t1"
    x = torch.rand(1, 3, 32, 32) * 255
    y = x + 20 * torch.randn_like(x)
    assert float(shallow(y, x)["content_loss"]) != float(default(y, x)["content_loss"])
    with pytest.raises(ValueError, match="not a layer of the loss network.*t1, t2"):
        st.training_loss(_cfg(images, tmp_path / "c", content_layer="relu9_9"), enc)
