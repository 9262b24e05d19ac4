"""The arbitrary path on onnxruntime: exported encoder/decoders, cached, verified, ≥ 40 dB."""
from __future__ import annotations

import math

import pytest
import torch

from stylize import arbitrary
from stylize.arbitrary import (ArbitraryStylizer, Decoder, DecoderConfig, onnx_runtime,
                               resolve_arbitrary_backend, use_backend)
from stylize.bench import _random_vgg19_relu3_1

from conftest import need_shared

pytestmark = pytest.mark.usefixtures("one_torch_thread")
pytest.importorskip("onnxruntime")


def _psnr(a, b) -> float:
    mse = float((a.clamp(0, 255).round() - b.clamp(0, 255).round()).pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(255 ** 2 / mse)


def _img(h, w, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.nn.functional.interpolate(torch.rand(1, 3, h // 8, w // 8, generator=g),
                                        size=(h, w), mode="bicubic", align_corners=False)
    return x.clamp(0, 1) * 255


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "onnx"


def _random_stylizer():
    torch.manual_seed(0)
    return ArbitraryStylizer(_random_vgg19_relu3_1(),
                             {lv: Decoder(DecoderConfig(lv)) for lv in arbitrary.LEVELS})


@pytest.mark.parametrize("method", arbitrary.METHODS)
def test_onnxruntime_matches_torch(cache, method):
    st = _random_stylizer()
    stats = st.style_statistics([_img(64, 80, 1)], method=method)
    photo = _img(75, 98, 2)  # odd sizes: the pools floor, the decoders' output is fitted back
    ref = st(photo, stats, scales=(2, 1))
    use_backend(st, "onnxruntime")
    assert st.runtime is not None
    onnx_stats = st.style_statistics([_img(64, 80, 1)], method=method)
    out = st(photo, onnx_stats, scales=(2, 1))
    assert out.shape == ref.shape
    assert _psnr(out, ref) >= 40.0
    use_backend(st, "torch")
    assert st.runtime is None
    torch.testing.assert_close(st(photo, stats, scales=(2, 1)), ref)


def test_export_is_cached_and_a_damaged_entry_is_rebuilt(cache):
    st = _random_stylizer()
    onnx_runtime(st)
    entries = list(cache.glob("arbitrary-*"))
    assert len(entries) == 1
    files = sorted(entries[0].glob("*.onnx"))
    assert [f.name for f in files] == sorted(f"{k}_{lv}.onnx" for k in ("dec", "enc")
                                             for lv in arbitrary.LEVELS)
    stamp = {f.name: f.stat().st_mtime_ns for f in files}
    onnx_runtime(st)  # cached: nothing is exported again
    assert {f.name: f.stat().st_mtime_ns for f in entries[0].glob("*.onnx")} == stamp
    (entries[0] / "dec_relu2_1.onnx").write_bytes(b"not onnx")
    rt = onnx_runtime(st)  # rebuilt
    x = _img(32, 32)
    f = st.encoder(x, ["relu2_1"])["relu2_1"]
    torch.testing.assert_close(rt.decode(f, "relu2_1"), st.decoders["relu2_1"](f),
                               atol=1e-2, rtol=1e-4)
    assert not list(cache.glob(".arbitrary-*"))  # no temporary folder left behind


def test_backend_choice():
    assert resolve_arbitrary_backend("auto", "cpu") == "onnxruntime"
    assert resolve_arbitrary_backend("torch", "cpu") == "torch"
    assert resolve_arbitrary_backend("auto", "meta") == "torch"  # not a CPU: torch
    with pytest.raises(ValueError, match="compiled"):
        resolve_arbitrary_backend("compiled", "cpu")
    with pytest.raises(ValueError, match="backend must be"):
        resolve_arbitrary_backend("tensorrt", "cpu")
    with pytest.raises(ValueError, match="runs on the CPU"):
        resolve_arbitrary_backend("onnxruntime", "meta")


def test_shipped_decoders_on_onnxruntime_within_40_db(cache):
    from engine.images import load_image, to_tensor
    from stylize.arbitrary import load_paintings, load_stylizer
    from stylize.losses import find_encoder
    import weights

    enc = need_shared("weights", "vgg19_normalised_relu3_1.pth")
    painting = need_shared("data", "styles", "candy.jpg")
    st = load_stylizer(find_encoder(enc))
    img = load_image(weights.SAMPLES_DIR / "amber.jpg")
    img = img.resize((160, round(160 * img.size[1] / img.size[0])))
    photo = to_tensor(img)
    styles, w = load_paintings({str(painting): 1.0}, 160)
    for method in arbitrary.METHODS:
        stats = st.style_statistics(styles, w, method)
        ref = st(photo, stats)
        use_backend(st, "onnxruntime")
        out = st(photo, st.style_statistics(styles, w, method))
        use_backend(st, "torch")
        assert _psnr(out, ref) >= 40.0, method
