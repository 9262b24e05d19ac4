"""Arbitrary style in tiles: whole-image content statistics, the look of one pass, no seams."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from norms import transfer
from stylize import arbitrary
from stylize.arbitrary import (ArbitraryStylizer, Decoder, DecoderConfig, feature_statistics,
                               stylize_with_paintings)
from stylize.bench import _random_vgg19_relu3_1
from stylize.tiling import axis_tiles, plan_arbitrary_tile

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def stylizer():
    torch.manual_seed(0)
    return ArbitraryStylizer(_random_vgg19_relu3_1(),
                             {lv: Decoder(DecoderConfig(lv)) for lv in arbitrary.LEVELS})


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float((a.round() - b.round()).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def _textured(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, h // 8, w // 8, generator=g),
                                        size=(h, w), mode="bicubic", align_corners=False)
    return x.clamp(0, 1) * 255


def _gradient(h: int, w: int) -> torch.Tensor:
    """A smooth ramp across the whole image: any seam at a tile border would show as a step."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    return torch.stack([255 * xx, 255 * yy, 255 * (1 - xx) * 0.5 + 64])[None]


@pytest.mark.parametrize("method", arbitrary.METHODS)
def test_tiled_equals_untiled(stylizer, method):
    style = _textured(96, 96, 1)
    stats = stylizer.style_statistics([style], method=method)
    photo = _textured(200, 264, 2)
    whole = stylizer(photo, stats, scales=(2, 1))
    tiled = stylizer(photo, stats, scales=(2, 1), tile=128)
    assert tiled.shape == whole.shape
    # the bar is 30 dB; with whole-image statistics and a margin covering the receptive
    # field the kept pixels are the one-pass ones up to float rounding
    assert _psnr(tiled, whole) > 60.0


def test_no_seam_on_a_gradient_across_tile_borders(stylizer):
    stats = stylizer.style_statistics([_textured(96, 96, 3)], method="wct")
    photo = _gradient(160, 300)
    whole = stylizer(photo, stats)
    tiled = stylizer(photo, stats, tile=128)
    assert _psnr(tiled, whole) >= 30.0
    xs = axis_tiles(300, 128, arbitrary.TILE_MARGIN, arbitrary.TILE_FEATHER)
    assert len(xs) >= 3
    borders = [t.keep_start for t in xs[1:]] + [t.keep_end for t in xs[:-1]]
    diff = (tiled - whole).abs()[0].amax(dim=0)  # H×W
    for b in borders:  # at and around every border the tiles agree with the one-pass result
        assert float(diff[:, b - 4:b + 4].max()) <= 2.0, b
    # and the tiled output has no step at the borders larger than the image's own steps
    step = (tiled[..., 1:] - tiled[..., :-1]).abs().mean(dim=(0, 1, 2))  # per column
    ref = (whole[..., 1:] - whole[..., :-1]).abs().mean(dim=(0, 1, 2))
    for b in borders:
        assert float(step[b - 1]) <= float(ref[b - 1]) + 0.5


def test_per_tile_statistics_would_change_the_look(stylizer):
    """The reason for the two passes: a tile normalised with its own statistics is off."""
    stats = stylizer.style_statistics([_textured(96, 96, 4)], method="wct")
    photo = _gradient(128, 256)
    whole = stylizer(photo, stats)
    left = stylizer(photo[..., :128], stats)  # its own statistics
    assert _psnr(left, whole[..., :128]) < 30.0


@pytest.mark.parametrize("method", arbitrary.METHODS)
def test_tiled_statistics_are_the_whole_images(stylizer, method):
    x = _textured(150, 230, 5)
    for level in arbitrary.LEVELS:
        f = stylizer.encoder(x, [level])[level]
        tiled = stylizer._tiled_statistics(x, level, method, 1e-5, 128)
        if method == "wct":
            ref = transfer.mean_cov(f)
            torch.testing.assert_close(tiled.mean, ref.mean, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(tiled.cov, ref.cov, rtol=1e-3, atol=1e-3)
        else:
            ref = transfer.mean_std(f)
            torch.testing.assert_close(tiled.mean, ref.mean, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(tiled.std, ref.std, rtol=1e-3, atol=1e-3)


def test_float32_gemm_covariance_matches_float64():
    g = torch.Generator().manual_seed(0)
    f = torch.relu(torch.randn(2, 64, 40, 50, generator=g) * 3 + 1)
    fast, ref = feature_statistics(f, "wct", chunk=512), transfer.mean_cov(f)
    torch.testing.assert_close(fast.mean, ref.mean)
    torch.testing.assert_close(fast.cov, ref.cov, rtol=1e-5, atol=1e-5)
    s = transfer.mean_cov(torch.relu(torch.randn(1, 64, 30, 30, generator=g)))
    a = transfer.wct(f, s, content_stats=fast)
    b = transfer.wct(f, s, content_stats=ref)
    peak = float(b.abs().max())
    mse = float((a - b).pow(2).mean())
    assert 10 * math.log10(peak ** 2 / max(mse, 1e-30)) >= 60.0


def test_paintings_and_photo_tiled_through_the_library(stylizer, tmp_path):
    arr = _textured(120, 160, 6)[0].permute(1, 2, 0).round().byte().numpy()
    Image.fromarray(arr).save(tmp_path / "paint.png")
    photo = Image.fromarray(_gradient(180, 240)[0].permute(1, 2, 0).round().byte().numpy())
    spec = {str(tmp_path / "paint.png"): 1.0}
    a = np.asarray(stylize_with_paintings(stylizer, photo, spec, max_size=None, scales=(1,)),
                   dtype=np.float64)
    b = np.asarray(stylize_with_paintings(stylizer, photo, spec, max_size=None, scales=(1,),
                                          tile=128), dtype=np.float64)
    assert a.shape == b.shape == (180, 240, 3)
    assert 10 * math.log10(255 ** 2 / max(((a - b) ** 2).mean(), 1e-12)) >= 30.0


def test_memory_plan():
    assert plan_arbitrary_tile(512, 512, max_memory=64 << 30) is None
    tile = plan_arbitrary_tile(4000, 3000, max_memory=2 << 30)
    assert tile is not None and 128 <= tile <= 2048 and tile % 4 == 0
    assert tile ** 2 * 1600 <= 2 << 30
    assert plan_arbitrary_tile(300, 200, tile=256) == 256
    assert plan_arbitrary_tile(200, 200, tile=256) is None
    with pytest.raises(ValueError, match="at least"):
        plan_arbitrary_tile(300, 200, tile=64)
    with pytest.raises(ValueError, match="not enough memory"):
        plan_arbitrary_tile(4000, 3000, max_memory=1 << 20)
    with pytest.raises(ValueError, match="tile must be"):
        stylizer_ = ArbitraryStylizer(_random_vgg19_relu3_1(),
                                      {"relu1_1": Decoder(DecoderConfig("relu1_1"))})
        stylizer_(_textured(64, 64), stylizer_.style_statistics([_textured(32, 32)]), tile=100)
