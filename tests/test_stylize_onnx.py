"""ONNX export of style models (every norm, dynamic N/H/W) against PyTorch with onnxruntime, the
onnxruntime backend of `stylize run`, and `stylize export --format onnx`."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

import main
import norms
from stylize import StyleConfig, TransformerNet, load_model, stylize_image
from stylize.infer import StyleModel
from stylize.train import save_model

ort = pytest.importorskip("onnxruntime")
from stylize.deploy import OnnxStyleRunner, export_onnx, onnx_metadata  # noqa: E402

runner = CliRunner()


def _model(norm: str) -> StyleModel:
    torch.manual_seed(0)
    net = TransformerNet(config=StyleConfig(norm, base_channels=8, num_residual=1))
    with torch.no_grad():
        net.deconv3.conv2d.weight.mul_(30)  # outputs spread over 0–255, not a flat grey
        net.deconv3.conv2d.bias.fill_(128)
        for name, p in net.named_parameters():
            if name.endswith("gate"):
                p.uniform_(0, 1)
    net.train()
    with torch.no_grad():  # running statistics away from (0, 1)
        for _ in range(2):
            net(torch.rand(2, 3, 32, 32) * 255)
    return StyleModel(net=net.eval(), config=net.config, name=f"tiny_{norm}")


@pytest.mark.parametrize("norm", norms.NORM_NAMES)
def test_onnx_matches_pytorch_for_every_norm(norm, tmp_path):
    m = _model(norm)
    path = export_onnx(m, tmp_path / f"{norm}.onnx")
    assert onnx_metadata(path)["config"]["norm"] == norm
    run = OnnxStyleRunner(path, threads=1)
    for shape in [(1, 3, 40, 36), (2, 3, 23, 17)]:  # dynamic batch and size, odd sizes padded
        x = torch.rand(*shape) * 255
        with torch.no_grad():
            want = m.net(x)
        got = run(x)
        assert got.shape == want.shape
        assert want.std() > 0.3  # not a constant
        assert float((got - want).abs().max()) <= 1e-3, norm


def test_onnxruntime_backend_and_export_command(tmp_path, monkeypatch):
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    m = _model("bin")
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 45, 3), dtype=np.uint8))
    a = np.asarray(stylize_image(m, img, backend="torch"), dtype=int)
    b = np.asarray(stylize_image(m, img, backend="onnxruntime"), dtype=int)
    assert np.abs(a - b).max() <= 1
    assert len(list((tmp_path / "cache").rglob("*.onnx"))) == 1  # exported once, cached
    stylize_image(m, img, backend="onnxruntime")
    assert len(list((tmp_path / "cache").rglob("*.onnx"))) == 1
    with pytest.raises(ValueError, match="backend"):
        stylize_image(m, img, backend="tensorrt")
    src = tmp_path / "m.safetensors"
    save_model(src, m.net, {"kind": "stylize", "config": m.config.to_dict(), "style": "t",
                            "steps": 0})
    dst = tmp_path / "m.onnx"
    r = runner.invoke(main.app, ["stylize", "export", str(src), str(dst), "--format", "onnx"])
    assert r.exit_code == 0, r.output
    x = torch.rand(1, 3, 32, 48) * 255
    with torch.no_grad():
        want = load_model(src).net(x)
    assert float((OnnxStyleRunner(dst)(x) - want).abs().max()) <= 1e-3
    r = runner.invoke(main.app, ["stylize", "export", str(src), str(dst), "--format", "onnx"])
    assert r.exit_code == 2 and "already exists" in r.output
    r = runner.invoke(main.app, ["stylize", "export", str(src), str(tmp_path / "x.onnx"),
                                 "--format", "tflite"])
    assert r.exit_code == 2 and "--format" in r.output
