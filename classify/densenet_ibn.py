"""DenseNet-121/169 with IBN-a, module names of the official IBN-Net code (``densenet_ibn.py``,
torchvision's DenseNet layout). Its IBN layer is BN-first with ratio 0.4: BatchNorm on the first
int(0.6·C) channels, InstanceNorm2d(affine) on the rest (``norms.IBN(C, 0.4, bn_first=True)``);
it replaces ``norm1`` of every third dense layer (1, 4, 7, ...) in dense blocks 1–3."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import norms

from .registry import register


class _DenseLayer(nn.Module):
    def __init__(self, in_ch: int, growth: int, bn_size: int, norm1, norm) -> None:
        super().__init__()
        self.norm1 = norm1(in_ch)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_ch, bn_size * growth, 1, bias=False)
        self.norm2 = norm(bn_size * growth)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(bn_size * growth, growth, 3, 1, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # N×Cin×H×W -> N×growth×H×W
        return self.conv2(self.relu2(self.norm2(self.conv1(self.relu1(self.norm1(x))))))


class _DenseBlock(nn.ModuleDict):
    def __init__(self, num_layers: int, in_ch: int, growth: int, bn_size: int, norm, ibn) -> None:
        super().__init__()
        for i in range(num_layers):
            norm1 = ibn if (ibn is not None and i % 3 == 0) else norm
            self[f"denselayer{i + 1}"] = _DenseLayer(in_ch + i * growth, growth, bn_size, norm1, norm)

    def forward(self, x: Tensor) -> Tensor:  # N×Cin×H×W -> N×(Cin+L·growth)×H×W
        feats = [x]
        for layer in self.values():
            feats.append(layer(torch.cat(feats, 1)))
        return torch.cat(feats, 1)


class _Transition(nn.Sequential):
    def __init__(self, in_ch: int, out_ch: int, norm) -> None:
        super().__init__()
        self.add_module("norm", norm(in_ch))
        self.add_module("relu", nn.ReLU())
        self.add_module("conv", nn.Conv2d(in_ch, out_ch, 1, bias=False))
        self.add_module("pool", nn.AvgPool2d(2, 2))


class DenseNetIBN(nn.Module):
    """DenseNet-BC (growth 32, bn_size 4, 64 initial features) with optional IBN-a."""

    def __init__(self, block_config: tuple[int, ...], num_classes: int = 1000,
                 norm: str | None = "bn", ibn: str | None = "a", growth: int = 32,
                 init_features: int = 64, bn_size: int = 4) -> None:
        super().__init__()
        if ibn not in (None, "a"):
            raise ValueError(f"DenseNet-IBN has the IBN-a placement only (ibn 'a' or None), "
                             f"got {ibn!r}")
        base = norms.get_norm_layer(norm or "bn")
        ibn_layer = (norms.get_norm_layer("ibn", ratio=0.4, bn_first=True) if ibn == "a"
                     else None)
        f = nn.Sequential()
        f.add_module("conv0", nn.Conv2d(3, init_features, 7, 2, 3, bias=False))
        f.add_module("norm0", base(init_features))
        f.add_module("relu0", nn.ReLU())
        f.add_module("pool0", nn.MaxPool2d(3, 2, 1))
        ch = init_features
        for i, n in enumerate(block_config):
            f.add_module(f"denseblock{i + 1}", _DenseBlock(n, ch, growth, bn_size, base,
                                                          ibn_layer if i < 3 else None))
            ch += n * growth
            if i != len(block_config) - 1:
                f.add_module(f"transition{i + 1}", _Transition(ch, ch // 2, base))
                ch //= 2
        f.add_module("norm5", base(ch))
        self.features = f
        self.classifier = nn.Linear(ch, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight)
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    def forward(self, x: Tensor) -> Tensor:  # N×3×H×W -> N×classes
        y = F.relu(self.features(x))
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(y, 1), 1))


def _builder(cfg: tuple[int, ...]):
    def build(num_classes: int = 1000, norm: str | None = None, ibn: str | None = "a",
              **kw) -> DenseNetIBN:
        return DenseNetIBN(cfg, num_classes, norm, ibn, **kw)

    return build


register("densenet121_ibn_a", norms=("bn",), ibn=("a",))(_builder((6, 12, 24, 16)))
register("densenet169_ibn_a", norms=("bn",), ibn=("a",))(_builder((6, 12, 32, 32)))
