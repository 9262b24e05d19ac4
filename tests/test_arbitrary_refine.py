"""``refine``: optimiser iterations (Gatys et al.) from the one-pass WCT/AdaIN result, through the
library, the CLI and the score methods; ``optimize(init=...)`` starts where it is told."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from stylize.arbitrary import stylize_with_paintings
from stylize.losses import gram_matrix
from stylize.optimize import OptimizeConfig, optimize
from test_arbitrary_tiling import _textured, stylizer  # noqa: F401  (the module's fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _save(t: torch.Tensor, path) -> str:
    Image.fromarray(t[0].permute(1, 2, 0).round().byte().numpy()).save(path)
    return str(path)


def _style_loss(enc, x: torch.Tensor, s: torch.Tensor) -> float:
    taps = ["relu1_1", "relu2_1", "relu3_1"]
    fx, fs = enc(x, taps), enc(s, taps)
    return sum(float(((gram_matrix(fx[t]) - gram_matrix(fs[t])) ** 2).sum()
                     / (gram_matrix(fs[t]) ** 2).sum()) for t in taps)


def test_refine_lowers_the_style_loss_of_the_one_pass_result(stylizer, tmp_path):
    photo, paint = _textured(64, 80, 1), _textured(64, 64, 2) * 0.5 + torch.tensor(
        [120.0, 10.0, 60.0]).view(1, 3, 1, 1)
    p = _save(paint, tmp_path / "paint.png")
    img = Image.fromarray(photo[0].permute(1, 2, 0).round().byte().numpy())
    one = stylize_with_paintings(stylizer, img, {p: 1.0}, max_size=None)
    ticks = []
    ref = stylize_with_paintings(stylizer, img, {p: 1.0}, max_size=None, refine=20,
                                 refine_progress=lambda d, t: ticks.append((d, t)))
    assert ref.size == one.size == img.size
    assert ticks[-1] == (20, 20)
    enc = stylizer.encoder

    def t(im):
        return torch.from_numpy(np.array(im)).permute(2, 0, 1)[None].float()

    paint_t = t(Image.open(p))
    with torch.no_grad():
        assert _style_loss(enc, t(ref), paint_t) < 0.8 * _style_loss(enc, t(one), paint_t)


def test_optimize_starts_from_init(stylizer):
    """With no iterations left to move it far, the result stays near ``init``, not the photo."""
    photo, init, paint = _textured(48, 48, 3), _textured(48, 48, 4), _textured(48, 48, 5)
    cfg = OptimizeConfig(size=None, scales=[1], iterations=[1])
    out = optimize(photo, [paint], stylizer.encoder, cfg, init=init).image
    assert (out - init).abs().mean() < (out - photo).abs().mean()


def test_refine_bad_input_is_one_line(stylizer, tmp_path):
    img = Image.new("RGB", (64, 48), (200, 100, 50))
    p = _save(_textured(32, 32, 6), tmp_path / "s.png")
    with pytest.raises(ValueError, match="refine must be 0–10000"):
        stylize_with_paintings(stylizer, img, {p: 1.0}, refine=-1)
    with pytest.raises(ValueError, match="memory budget; lower --max-size"):
        stylize_with_paintings(stylizer, img.resize((300, 200)), {p: 1.0}, refine=5, tile=128,
                               max_size=None)


def test_score_method_options():
    from stylize.methods import parse_options

    assert parse_options("wct", "refine=30;alpha=0.8") == {"refine": 30, "alpha": 0.8}
    assert parse_options("wct", None) == {}
    for bad, why in (("foo=1", "options are KEY=VALUE"), ("refine", "options are KEY=VALUE"),
                     ("refine=many", "refine must be a number")):
        with pytest.raises(ValueError, match=why):
            parse_options("wct", bad)


def test_cli_refine_only_with_a_painting_on_images(tmp_path):
    import main

    photo = tmp_path / "p.png"
    Image.new("RGB", (32, 32), (9, 9, 9)).save(photo)
    runner = CliRunner()
    r = runner.invoke(main.app, ["stylize", "run", str(photo), "--model", "candy_bin",
                                 "--refine", "10", "-o", str(tmp_path / "o.png")])
    assert r.exit_code == 2 and "--refine applies with --style-image" in r.output
    assert len(r.output.strip().splitlines()) == 1
    video = tmp_path / "v.mp4"
    video.write_bytes(b"not really")
    r = runner.invoke(main.app, ["stylize", "run", str(video), "--style-image", str(photo),
                                 "--refine", "10", "-o", str(tmp_path / "o.mp4")])
    assert r.exit_code == 2 and "--refine applies to images, not a video" in r.output
