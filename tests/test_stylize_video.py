"""`stylize video`: round trip (frames, size, fps, audio), flicker metric, smoothing, errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

import main
from stylize import StyleConfig, TransformerNet, load_model
from stylize.train import save_model
from stylize.video import flicker_ratio, read_clip, stylize_frames, write_clip

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(main.app, ["--device", "cpu", "stylize", *map(str, args)])


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def model(tmp_path) -> Path:
    torch.manual_seed(0)
    net = TransformerNet(config=StyleConfig("in", base_channels=8, num_residual=1))
    with torch.no_grad():
        net.deconv3.conv2d.weight.mul_(30)
        net.deconv3.conv2d.bias.fill_(128)
    path = tmp_path / "tiny.safetensors"
    save_model(path, net.eval(), {"kind": "stylize", "config": net.config.to_dict(),
                                  "style": "tiny", "steps": 0})
    return path


def _frames(n=8, h=32, w=48):
    yy, xx = np.mgrid[0:h, 0:w]
    return [np.stack([(xx * 5 + 9 * t) % 256, (yy * 7) % 256, (xx + yy + t) % 256],
                     -1).astype(np.uint8) for t in range(n)]


@pytest.mark.parametrize("audio", [True, False])
def test_round_trip_keeps_frames_size_fps_audio(tmp_path, model, audio):
    src = write_clip(_frames(), tmp_path / "in.mp4", fps=12, audio=audio)
    dst = tmp_path / "out" / "styled.mp4"
    r = _invoke("video", src, "-m", model, "-o", dst, "--smooth", "--batch", "3")
    assert r.exit_code == 0, r.output
    assert "flicker" in r.output
    frames, fps, has_audio = read_clip(dst)
    assert len(frames) == 8 and frames[0].shape == (32, 48, 3)
    assert fps == pytest.approx(12.0) and has_audio == audio
    ins = read_clip(src)[0]
    assert np.abs(frames[3].astype(float) - ins[3].astype(float)).mean() > 5  # stylized
    msg = _invoke("video", src, "-m", model, "-o", dst)  # exists: refused without --overwrite
    assert msg.exit_code == 2 and "already exists" in msg.output


def test_flicker_is_lower_with_smoothing():
    # a static texture with a square flashing black/white at random places: per-frame instance
    # statistics jump every frame and shift the look of the whole (static) picture
    rng = np.random.default_rng(0)
    h, w = 64, 96
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 5) % 256, (yy * 7) % 256, ((xx + yy) * 3) % 256], -1).astype(np.float32)
    frames = []
    for t in range(16):
        f = base + rng.normal(0, 6, base.shape)
        y0, x0 = rng.integers(0, h - 24), rng.integers(0, w - 24)
        f[y0:y0 + 24, x0:x0 + 24] = 255 if t % 2 else 0
        frames.append(np.clip(f, 0, 255).astype(np.uint8))
    m = load_model("candy_bin")
    plain = flicker_ratio(frames, stylize_frames(m, frames))
    smooth = flicker_ratio(frames, stylize_frames(m, frames, smooth=0.9, batch=5))
    assert smooth < 0.92 * plain
    # batching does not change a smoothed stream
    one = stylize_frames(m, frames[:6], smooth=0.9, batch=1)
    six = stylize_frames(m, frames[:6], smooth=0.9, batch=6)
    assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(one, six)) <= 1


def test_video_errors_are_one_line(tmp_path, model):
    src = write_clip(_frames(4), tmp_path / "in.mp4", fps=10)
    text = tmp_path / "notes.mp4"
    text.write_text("not a video")
    for args in ([src, "-o", tmp_path / "o.xyz"], [tmp_path / "missing.mp4", "-o", tmp_path / "o.mp4"],
                 [text, "-o", tmp_path / "o.mp4"], [src, "-o", src],
                 [src, "-o", tmp_path / "o.mp4", "--momentum", "1.5", "--smooth"]):
        r = _invoke("video", *args, "-m", model)
        lines = [l for l in r.output.splitlines() if l.strip() and "frame" not in l]
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        assert len(lines) == 1 and lines[0].startswith("error: "), r.output
    assert not (tmp_path / "o.mp4").exists() and not (tmp_path / "o.xyz").exists()


def test_live_stylizer_one_frame_per_call_is_one_stream(model, monkeypatch):
    from PIL import Image

    from stylize.video import LiveStylizer

    m = load_model(model)
    frames = _frames(6)
    whole = stylize_frames(m, frames, smooth=0.8, batch=1)
    live = LiveStylizer(m, smooth=0.8, max_size=None)
    calls = [np.asarray(live(Image.fromarray(f))) for f in frames]
    assert live.frames == 6
    assert all(np.array_equal(a, b) for a, b in zip(calls, whole))  # exactly the library stream
    batched = stylize_frames(m, frames, smooth=0.8, batch=3)  # (conv batching: rounding only)
    assert max(np.abs(a.astype(int) - b.astype(int)).max() for a, b in zip(calls, batched)) <= 1
    plain = stylize_frames(m, frames, batch=1)
    assert np.abs(calls[-1].astype(int) - plain[-1].astype(int)).max() > 0  # it did smooth
    live.reset()
    assert live.frames == 0
    assert np.array_equal(np.asarray(live(frames[4])), stylize_frames(m, [frames[4]],
                                                                      smooth=0.8)[0])
    off = LiveStylizer(m, smooth=None, max_size=None)
    assert all(np.array_equal(np.asarray(off(f)), p) for f, p in zip(frames, plain))
    # a pause longer than reset_after starts a new stream
    clock = iter([0.0, 0.5, 10.0])
    import types

    monkeypatch.setattr("stylize.video.time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    paused = LiveStylizer(m, smooth=0.8, max_size=None, reset_after=2.0)
    paused(frames[0])
    paused(frames[1])
    assert paused.frames == 2
    assert np.array_equal(np.asarray(paused(frames[2])), stylize_frames(m, [frames[2]],
                                                                        smooth=0.8)[0])
    assert paused.frames == 1
    monkeypatch.undo()
    # processing size, strength and colour options keep the frame's size
    small = LiveStylizer(m, smooth=0.8, max_size=24)
    out = small(Image.fromarray(frames[0]), strength=0.5, preserve_color=True)
    assert out.size == (48, 32) and out.mode == "RGB"
    with pytest.raises(ValueError, match="momentum"):
        LiveStylizer(m, smooth=1.0)


def test_bench_flicker_rows_for_each_momentum():
    """``stylize bench --video``: one row per momentum (None = per-frame statistics), each with
    finite flicker figures from the same panning clip (equal input differences)."""
    import math

    from stylize.bench import bench_flicker

    rows = bench_flicker("candy_bin", frames=4, size=64, momenta=(0.9,))
    assert [r["smooth"] for r in rows] == [None, 0.9]
    assert rows[0]["input_mean_abs_diff"] == rows[1]["input_mean_abs_diff"] > 0
    assert all(math.isfinite(r["flicker"]) and r["motion_aligned_output_diff"] >= 0 for r in rows)
