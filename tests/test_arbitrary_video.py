"""Arbitrary style on video: fixed painting statistics, moving-average content statistics."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from norms import transfer
from stylize import arbitrary
from stylize.arbitrary import ArbitraryStylizer, ContentSmoother, Decoder, DecoderConfig
from stylize.bench import _random_vgg19_relu3_1
from stylize.video import VIDEO_FORMATS, read_clip, stylize_video_paintings, write_clip

from conftest import need_shared

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stylizer():
    torch.manual_seed(0)
    return ArbitraryStylizer(_random_vgg19_relu3_1(),
                             {lv: Decoder(DecoderConfig(lv)) for lv in ("relu2_1", "relu1_1")})


def _frames(n=6, h=40, w=56):
    g = np.random.default_rng(0)
    base = np.asarray(Image.fromarray(g.integers(0, 255, (8, 12, 3), dtype=np.uint8))
                      .resize((w + 2 * n, h + 2 * n), Image.BICUBIC))
    return [base[t:t + h, 2 * t:2 * t + w].copy() for t in range(n)]


def _painting(path):
    g = np.random.default_rng(1)
    Image.fromarray(g.integers(0, 255, (24, 24, 3), dtype=np.uint8)).resize((48, 48)).save(path)
    return str(path)


def test_smoother_is_a_moving_average_of_the_content_statistics():
    a = transfer.mean_cov(torch.rand(1, 8, 6, 6))
    b = transfer.mean_cov(torch.rand(1, 8, 6, 6) * 3)
    sm = ContentSmoother(0.75)
    assert sm.update("k", a) is a  # the first frame is its own average
    c = sm.update("k", b)
    torch.testing.assert_close(c.mean, 0.75 * a.mean + 0.25 * b.mean)
    torch.testing.assert_close(c.cov, 0.75 * a.cov + 0.25 * b.cov)
    s1, s2 = transfer.mean_std(torch.rand(1, 4, 5, 5)), transfer.mean_std(torch.rand(1, 4, 5, 5))
    d = ContentSmoother(0.5)
    d.update("k", s1)
    torch.testing.assert_close(d.update("k", s2).std ** 2, 0.5 * s1.std ** 2 + 0.5 * s2.std ** 2)
    with pytest.raises(ValueError, match="momentum"):
        ContentSmoother(1.0)


@pytest.mark.parametrize("method", arbitrary.METHODS)
def test_momentum_zero_is_per_frame_and_smoothing_uses_the_past(stylizer, method):
    stats = stylizer.style_statistics([torch.rand(1, 3, 32, 32) * 255], method=method)
    frames = [torch.from_numpy(f).permute(2, 0, 1)[None].float() for f in _frames(3)]
    plain = [stylizer(x, stats) for x in frames]
    zero = ContentSmoother(0.0)
    torch.testing.assert_close([stylizer(x, stats, smoother=zero) for x in frames], plain)
    sm = ContentSmoother(0.9)
    smoothed = [stylizer(x, stats, smoother=sm) for x in frames]
    torch.testing.assert_close(smoothed[0], plain[0])  # nothing to average yet
    assert not torch.allclose(smoothed[2], plain[2], atol=1e-3)
    assert sm.frames == 3 and set(sm.state) == {(0, "relu2_1"), (0, "relu1_1")}


def test_video_keeps_frames_fps_and_audio(stylizer, tmp_path):
    src = write_clip(_frames(), tmp_path / "in.mp4", fps=12, audio=True)
    paint = _painting(tmp_path / "p.png")
    r = stylize_video_paintings(stylizer, src, tmp_path / "out.mp4", {paint: 1.0},
                                max_size=None, smooth=0.9, bar=False)
    frames, fps, audio = read_clip(tmp_path / "out.mp4")
    assert len(frames) == r.frames == 6 and frames[0].shape == (40, 56, 3)
    assert fps == pytest.approx(12) and audio and r.audio
    assert r.flicker > 0 and r.smooth == 0.9
    ins, outs = read_clip(src)[0], frames
    assert np.abs(np.asarray(outs[0], float) - ins[0]).mean() > 1  # stylized, not a copy


def test_cli_video_with_style_image(tmp_path):
    import main

    enc = need_shared("weights", "vgg19_normalised_relu3_1.pth")
    src = write_clip(_frames(4, 32, 48), tmp_path / "in.mp4", fps=10)
    paint = _painting(tmp_path / "p.png")
    base = ["--device", "cpu", "stylize", "run", "--style-image", paint, "--vgg-weights",
            str(enc), str(src)]
    res = CliRunner().invoke(main.app, base + ["-o", str(tmp_path / "out.mp4"),
                                               "--method", "adain", "--backend", "torch"])
    assert res.exit_code == 0, res.output
    assert "flicker" in res.output and "momentum 0.9" in res.output
    assert len(read_clip(tmp_path / "out.mp4")[0]) == 4
    for extra, msg in ((["-o", str(tmp_path / "o.mp4"), "--momentum", "1.5"], "--momentum"),
                       (["-o", str(tmp_path / "o.png")], "video extension"),
                       (["-o", str(tmp_path / "out.mp4")], "exists")):
        res = CliRunner().invoke(main.app, base + extra)
        assert res.exit_code == 2, res.output
        assert msg in res.output and "Traceback" not in res.output, res.output
    assert not (tmp_path / "o.mp4").exists()


def test_cli_video_suffixes_match_the_writer():
    from cli.stylize import _VIDEO_SUFFIXES

    assert set(_VIDEO_SUFFIXES) == set(VIDEO_FORMATS)
