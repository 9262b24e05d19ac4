"""Arbitrary style (encoder → AdaIN/WCT → decoder), decoder training, and the Gatys optimiser."""
from __future__ import annotations

import math

import pytest
import torch
from PIL import Image

from stylize import arbitrary
from stylize.arbitrary import ArbitraryStylizer, Decoder, DecoderConfig, load_decoder, save_decoder
from stylize.bench import _random_vgg19_relu3_1
from stylize.decoder import DecoderTrainConfig, train_decoder
from stylize.optimize import OptimizeConfig, optimize

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def encoder():
    return _random_vgg19_relu3_1()


def _img(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, 6, 6, generator=g), size=(h, w),
                                        mode="bicubic", align_corners=False)
    return (x.clamp(0, 1) * 255)


@pytest.mark.parametrize("level,factor", [("relu1_1", 1), ("relu2_1", 2), ("relu3_1", 4)])
def test_decoder_inverts_the_encoder_shape(encoder, level, factor):
    dec = Decoder(DecoderConfig(level))
    f = encoder(_img(32, 40), [level])[level]
    assert dec(f).shape == (1, 3, f.shape[-2] * factor, f.shape[-1] * factor)


def test_decoder_file_round_trip_and_kind_check(tmp_path):
    dec = Decoder(DecoderConfig("relu2_1"))
    p = save_decoder(tmp_path / "d.safetensors", dec, {"heldout_psnr": 20.0})
    back, meta = load_decoder(p)
    assert back.level == "relu2_1" and meta["heldout_psnr"] == 20.0
    for k, v in dec.state_dict().items():
        assert torch.equal(back.state_dict()[k], v)
    from engine.checkpoint import save_model
    other = save_model(tmp_path / "s.safetensors", dec.state_dict(), kind="style", config={"norm": "in"})
    with pytest.raises(ValueError, match="decoder"):
        load_decoder(other)
    with pytest.raises(ValueError, match="unknown decoder level"):
        DecoderConfig.from_dict({"level": "relu9_9"})


def _stylizer(encoder, levels=arbitrary.LEVELS):
    torch.manual_seed(0)
    return ArbitraryStylizer(encoder, {lv: Decoder(DecoderConfig(lv)) for lv in levels})


@pytest.mark.parametrize("method", arbitrary.METHODS)
def test_any_size_in_same_size_out_with_scales_and_levels(encoder, method):
    st = _stylizer(encoder)
    stats = st.style_statistics([_img(48, 48, 1)], method=method)
    out = st(_img(37, 53), stats, scales=(2, 1))
    assert out.shape == (1, 3, 37, 53) and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 255


def test_fixed_statistics_and_blends(encoder):
    st = _stylizer(encoder, ["relu2_1"])
    a, b, photo = _img(40, 40, 1), _img(40, 40, 2), _img(32, 32, 3)
    stats = st.style_statistics([a], method="wct")
    torch.testing.assert_close(st(photo, stats), st(photo, st.style_statistics([a], method="wct")))
    same = st.style_statistics([a, a], [0.3, 0.7], method="wct")
    torch.testing.assert_close(st(photo, same), st(photo, stats), atol=1e-3, rtol=1e-4)
    mixed = st(photo, st.style_statistics([a, b], [0.5, 0.5], method="wct"))
    assert not torch.allclose(mixed, st(photo, stats), atol=1e-2)
    # alpha = 0 keeps the photo's own features: the output is the plain reconstruction
    zero = st(photo, stats, alpha=0.0)
    f = encoder(photo, ["relu2_1"])["relu2_1"]
    torch.testing.assert_close(zero, st.decoders["relu2_1"](f).clamp(0, 255))


def test_bad_arguments_are_one_line_errors(encoder):
    st = _stylizer(encoder, ["relu1_1"])
    with pytest.raises(ValueError, match="method"):
        st.style_statistics([_img(20, 20)], method="nst")
    stats = st.style_statistics([_img(20, 20)])
    with pytest.raises(ValueError, match="alpha"):
        st(_img(20, 20), stats, alpha=1.5)
    with pytest.raises(ValueError, match="scales"):
        arbitrary.parse_scales("2,x")
    with pytest.raises(ValueError, match="no decoder"):
        arbitrary.load_stylizer(encoder, ["relu1_1"], paths={"relu1_1": "/nonexistent.safetensors"})


def _photos(folder, n=6, size=48):
    folder.mkdir()
    for i in range(n):
        arr = (_img(size, size + 8, i)[0].permute(1, 2, 0).round().byte().numpy())
        Image.fromarray(arr).save(folder / f"p{i}.png")
    return folder


def test_decoder_training_learns_and_resumes_exactly(tmp_path, encoder):
    photos = _photos(tmp_path / "photos", n=12)
    base = dict(level="relu1_1", content_dir=str(photos), image_size=32, load_size=48,
                batch_size=2, lr=1e-2, checkpoint_every=2, device="cpu")
    full = train_decoder(DecoderTrainConfig(out=str(tmp_path / "a"), steps=8, **base),
                         encoder=encoder, show_bar=False)
    seen = []  # interrupt run b after 4 of its 8 steps (the cosine schedule spans all 8)
    train_decoder(DecoderTrainConfig(out=str(tmp_path / "b"), steps=8, **base), encoder=encoder,
                  show_bar=False, progress=lambda ev: seen.append(ev.step),
                  should_stop=lambda: bool(seen) and seen[-1] >= 4)
    assert seen[-1] == 4
    resumed = train_decoder(DecoderTrainConfig(out=str(tmp_path / "b"), steps=8, resume=True, **base),
                            encoder=encoder, show_bar=False)
    a, meta = load_decoder(full)
    b, _ = load_decoder(resumed)
    for k, v in a.state_dict().items():
        assert torch.equal(b.state_dict()[k], v), k
    # 12 photos: the fixed rule holds out every 10th sorted name (2), trains on 10
    assert meta["train_photos"] == 10 and meta["heldout_photos"] == 2
    assert math.isfinite(meta["final_losses"]["heldout_psnr"])
    lines = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    assert lines


def test_decoder_training_rejects_bad_config(tmp_path):
    with pytest.raises(ValueError, match="level"):
        DecoderTrainConfig(level="relu4_1", content_dir="x").validate()
    with pytest.raises(ValueError, match="content"):
        DecoderTrainConfig().validate()


# ---------------------------------------------------------------------------------- optimiser

@pytest.mark.parametrize("opt", ["lbfgs", "adam"])
def test_optimiser_lowers_the_style_loss_and_reports_progress(encoder, opt):
    photo, style = _img(48, 64, 1), _img(64, 64, 2)
    seen = []
    cfg = OptimizeConfig(size=64, scales=[2, 1], iterations=[10, 10], optimizer=opt, lr=8.0)
    res = optimize(photo, [style], encoder, cfg, progress=lambda d, t, terms: seen.append((d, terms)))
    assert res.image.shape == (1, 3, 48, 64) and res.iterations == 20 and not res.stopped
    assert seen[-1][0] == 20
    start = optimize(photo, [style], encoder, OptimizeConfig(size=64, scales=[1], iterations=[1],
                                                             optimizer=opt, lr=1e-6))
    assert res.losses["style"] < 0.8 * start.losses["style"]


def test_optimiser_is_deterministic_and_cancels(encoder):
    photo, style = _img(32, 32, 3), _img(32, 32, 4)
    cfg = OptimizeConfig(size=32, scales=[1], iterations=[20])
    a = optimize(photo, [style], encoder, cfg)
    b = optimize(photo, [style], encoder, cfg)
    assert torch.equal(a.image, b.image)
    calls = []
    stop = optimize(photo, [style], encoder, cfg, should_stop=lambda: calls.append(1) or len(calls) > 1)
    assert stop.stopped and stop.iterations == 10  # one 10-iteration L-BFGS chunk ran


def test_optimiser_config_errors():
    with pytest.raises(ValueError, match="iterations"):
        OptimizeConfig(scales=[4, 2, 1], iterations=[1, 2]).validate()
    with pytest.raises(ValueError, match="optimizer"):
        OptimizeConfig(optimizer="sgd").validate()
    with pytest.raises(ValueError, match="style-weight"):
        OptimizeConfig(style_weight=float("nan")).validate()
