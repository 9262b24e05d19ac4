"""Johnson et al. (2016) feed-forward style network with a pluggable normalization layer.

The module and attribute names follow pytorch/examples' ``fast_neural_style/transformer_net.py``
exactly, so with ``norm="in"`` the state dict has the layout of its published candy / mosaic /
udnie / rain_princess models (``../shared/specs/fast_neural_style_state_dict_keys.json``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch.nn.functional as F
from torch import Tensor, nn

import norms
import engine.io


@dataclass
class StyleConfig:
    """Architecture of a ``TransformerNet``; stored in every checkpoint to rebuild the model."""

    norm: str = "in"
    base_channels: int = 32  # 32 → 64 → 128 as in Johnson et al.
    num_residual: int = 5

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StyleConfig":
        """A validated config (bounds checked before any network is built)."""
        if not isinstance(d, dict):
            raise ValueError("style model config must be a JSON object")
        names = {f.name for f in dataclasses.fields(cls)}
        cfg = cls(**{k: v for k, v in d.items() if k in names})
        cfg.validate()
        return cfg

    def validate(self) -> None:
        """One-line ``ValueError`` for an unknown norm or a size out of range: a crafted file
        cannot make a loader allocate a huge network (128 channels × 32 blocks ≈ 0.2 GB fp32)."""
        from engine.checkpoint import check_range

        if self.norm not in norms.NORM_NAMES:
            raise ValueError(f"unknown norm {self.norm!r}; known: {', '.join(norms.NORM_NAMES)}")
        check_range("base channels", self.base_channels, 1, 128)
        check_range("number of residual blocks", self.num_residual, 0, 32)


class ConvLayer(nn.Module):
    """Reflection padding of ``kernel // 2`` then a convolution (pytorch/examples' ConvLayer)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(cin, cout, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:  # N×Cin×H×W -> N×Cout×H/s×W/s
        return self.conv2d(self.reflection_pad(x))


class UpsampleConvLayer(nn.Module):
    """Nearest ×``upsample`` then a reflection-padded convolution (avoids deconv checkerboards)."""

    def __init__(self, cin: int, cout: int, kernel_size: int, stride: int,
                 upsample: int | None = None) -> None:
        super().__init__()
        self.upsample = upsample
        self.reflection_pad = nn.ReflectionPad2d(kernel_size // 2)
        self.conv2d = nn.Conv2d(cin, cout, kernel_size, stride)

    def forward(self, x: Tensor) -> Tensor:  # N×Cin×H×W -> N×Cout×uH×uW
        if self.upsample:
            x = F.interpolate(x, mode="nearest", scale_factor=self.upsample)
        return self.conv2d(self.reflection_pad(x))


class ResidualBlock(nn.Module):
    """conv-norm-ReLU-conv-norm plus identity (He et al. 2016, as used by Johnson et al.)."""

    def __init__(self, channels: int, norm_layer: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv1 = ConvLayer(channels, channels, 3, 1)
        self.in1 = norm_layer(channels)
        self.conv2 = ConvLayer(channels, channels, 3, 1)
        self.in2 = norm_layer(channels)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:  # N×C×H×W -> N×C×H×W
        out = self.relu(self.in1(self.conv1(x)))
        return self.in2(self.conv2(out)) + x


class TransformerNet(nn.Module):
    """Image transformation network of Johnson et al. 2016 (pytorch/examples layout).

    Input and output are RGB in 0–255 (no output activation; clamp when saving). Any spatial size
    works: the input is padded to a multiple of 4 (reflection) and the output cropped back.
    """

    def __init__(self, norm: str = "in", base_channels: int = 32, num_residual: int = 5,
                 config: StyleConfig | None = None) -> None:
        super().__init__()
        self.config = config or StyleConfig(norm=norm, base_channels=base_channels,
                                            num_residual=num_residual)
        self.config.validate()
        norm_layer = norms.get_norm_layer(self.config.norm)
        c1 = self.config.base_channels
        c2, c3 = 2 * c1, 4 * c1
        self.conv1 = ConvLayer(3, c1, 9, 1)
        self.in1 = norm_layer(c1)
        self.conv2 = ConvLayer(c1, c2, 3, 2)
        self.in2 = norm_layer(c2)
        self.conv3 = ConvLayer(c2, c3, 3, 2)
        self.in3 = norm_layer(c3)
        for i in range(1, self.config.num_residual + 1):
            setattr(self, f"res{i}", ResidualBlock(c3, norm_layer))
        self.deconv1 = UpsampleConvLayer(c3, c2, 3, 1, upsample=2)
        self.in4 = norm_layer(c2)
        self.deconv2 = UpsampleConvLayer(c2, c1, 3, 1, upsample=2)
        self.in5 = norm_layer(c1)
        self.deconv3 = ConvLayer(c1, 3, 9, 1)
        self.relu = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:  # N×3×H×W (0–255) -> N×3×H×W (≈0–255)
        h, w = x.shape[-2:]
        # Two stride-2 stages then two ×2 upsamplings: only multiples of 4 come back at their size.
        # At least 16 px so every reflection pad (up to 4 px at full size) stays valid.
        ph, pw = max(-h % 4, 16 - h), max(-w % 4, 16 - w)
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        y = self.relu(self.in1(self.conv1(x)))  # N×32×H×W
        y = self.relu(self.in2(self.conv2(y)))  # N×64×H/2×W/2
        y = self.relu(self.in3(self.conv3(y)))  # N×128×H/4×W/4
        for i in range(1, self.config.num_residual + 1):
            y = getattr(self, f"res{i}")(y)  # N×128×H/4×W/4
        y = self.relu(self.in4(self.deconv1(y)))  # N×64×H/2×W/2
        y = self.relu(self.in5(self.deconv2(y)))  # N×32×H×W
        y = self.deconv3(y)  # N×3×H×W
        return y[..., :h, :w] if (ph or pw) else y


def convert_examples_state_dict(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A pytorch/examples ``.pth`` state dict made loadable with ``strict=True``.

    Checkpoints saved with older PyTorch versions carry ``in*.running_mean``/``running_var``
    (and ``num_batches_tracked``) from ``InstanceNorm2d``; the network never used them, so they
    are dropped (loss-free).
    """
    out = {}
    for k, v in state.items():
        if k.startswith("module."):  # saved from DataParallel
            k = k[len("module."):]
        leaf = k.rsplit(".", 1)[-1]
        parent = k.rsplit(".", 2)[-2] if k.count(".") >= 1 else ""
        if leaf in ("running_mean", "running_var", "num_batches_tracked") and parent.startswith("in"):
            continue
        out[k] = v
    return out


def load_examples_pth(path: str | Path) -> TransformerNet:
    """Build an ``in`` TransformerNet from a pytorch/examples ``.pth`` (weights-only load)."""
    state = engine.io.load_torch(path)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ValueError(f"{path} is not a state dict of tensors (pytorch/examples TransformerNet)")
    state = convert_examples_state_dict(state)
    net = TransformerNet(norm="in")
    expected = set(net.state_dict())
    missing, unexpected = expected - set(state), set(state) - expected
    if missing or unexpected:
        raise ValueError(f"{path} is not a pytorch/examples TransformerNet state dict "
                         f"({len(missing)} keys missing, {len(unexpected)} unexpected, e.g. "
                         f"{sorted(missing or unexpected)[0]!r})")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: tensor shapes do not match TransformerNet "
                         f"({str(exc).splitlines()[-1].strip()})") from None
    return net
