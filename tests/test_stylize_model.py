"""TransformerNet: pytorch/examples layout, reference function, every norm, odd sizes."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from conftest import need_shared

import norms
from stylize.model import TransformerNet, convert_examples_state_dict, load_examples_pth


def _reference_forward(sd: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """pytorch/examples' TransformerNet written out functionally from the spec's facts: reflection
    pad k//2 + conv, InstanceNorm2d(affine), ReLU, 5 residual blocks, nearest ×2 then conv."""

    def conv(name, h, stride=1, up=False):
        w, b = sd[f"{name}.conv2d.weight"], sd[f"{name}.conv2d.bias"]
        if up:
            h = F.interpolate(h, scale_factor=2, mode="nearest")
        k = w.shape[-1] // 2
        return F.conv2d(F.pad(h, (k, k, k, k), mode="reflect"), w, b, stride=stride)

    def inorm(name, h):
        return F.instance_norm(h, weight=sd[f"{name}.weight"], bias=sd[f"{name}.bias"], eps=1e-5)

    h = F.relu(inorm("in1", conv("conv1", x)))
    h = F.relu(inorm("in2", conv("conv2", h, 2)))
    h = F.relu(inorm("in3", conv("conv3", h, 2)))
    for i in range(1, 6):
        r = F.relu(inorm(f"res{i}.in1", conv(f"res{i}.conv1", h)))
        h = inorm(f"res{i}.in2", conv(f"res{i}.conv2", r)) + h
    h = F.relu(inorm("in4", conv("deconv1", h, up=True)))
    h = F.relu(inorm("in5", conv("deconv2", h, up=True)))
    return conv("deconv3", h)


def _random_state(net: TransformerNet) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {k: torch.randn(v.shape, generator=g) * 0.1 + (1.0 if k.endswith("in1.weight") else 0.0)
            for k, v in net.state_dict().items()}


def test_in_layout_equals_pytorch_examples_spec():
    spec = json.loads(need_shared("specs", "fast_neural_style_state_dict_keys.json").read_text())
    sd = TransformerNet(norm="in").state_dict()
    assert {k: list(v.shape) for k, v in sd.items()} == spec


def test_output_equals_independent_reference():
    net = TransformerNet(norm="in").eval()
    sd = _random_state(net)
    net.load_state_dict(sd, strict=True)
    x = torch.rand(2, 3, 32, 48) * 255
    with torch.no_grad():
        assert torch.allclose(net(x), _reference_forward(sd, x), atol=1e-3, rtol=1e-4)


def test_examples_pth_with_stale_running_stats_loads(tmp_path):
    net = TransformerNet(norm="in").eval()
    sd = _random_state(net)
    stale = dict(sd)
    for name in ["in1", "in2", "in3", "in4", "in5", "res1.in1", "res3.in2"]:
        stale[f"{name}.running_mean"] = torch.zeros(sd[f"{name}.weight"].shape)
        stale[f"{name}.running_var"] = torch.ones(sd[f"{name}.weight"].shape)
    assert set(convert_examples_state_dict(stale)) == set(sd)
    torch.save(stale, tmp_path / "candy.pth")
    loaded = load_examples_pth(tmp_path / "candy.pth").eval()
    x = torch.rand(1, 3, 24, 24) * 255
    with torch.no_grad():
        assert torch.allclose(loaded(x), _reference_forward(sd, x), atol=1e-3, rtol=1e-4)


def test_foreign_pth_is_a_one_line_error(tmp_path):
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "x.pth")
    with pytest.raises(ValueError, match="not a pytorch/examples"):
        load_examples_pth(tmp_path / "x.pth")


@pytest.mark.parametrize("norm", norms.NORM_NAMES)
@pytest.mark.parametrize("size", [(20, 28), (17, 30)])
def test_every_norm_keeps_the_input_size(norm, size):
    net = TransformerNet(norm=norm, base_channels=8, num_residual=1)
    x = torch.rand(2, 3, *size) * 255
    y = net.train()(x)
    assert y.shape == x.shape
    y.mean().backward()  # gradients reach the first conv through every norm
    assert net.conv1.conv2d.weight.grad is not None
    with torch.no_grad():
        assert net.eval()(x[:1]).shape == (1, 3, *size)


def test_tiny_input_is_padded_not_refused():
    net = TransformerNet(norm="in", base_channels=4, num_residual=1).eval()
    with torch.no_grad():
        assert net(torch.rand(1, 3, 5, 3) * 255).shape == (1, 3, 5, 3)
