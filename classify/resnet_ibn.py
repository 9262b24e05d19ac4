"""ImageNet-style ResNet / ResNeXt / SE-ResNet with IBN-Net's IBN-a and IBN-b (Pan et al., "Two at
Once: Enhancing Learning and Generalization Capacities via IBN-Net", ECCV 2018), with the module
names of the official code (XingangPan/IBN-Net, ``ibnnet/``), so the published checkpoints load
with ``strict=True`` and compute the same function.

- IBN-a: ``bn1`` of every block in layer1–layer3 is ``norms.IBN`` (IN on the first half of the
  channels, BN on the rest).
- IBN-b: the stem ``bn1`` is InstanceNorm2d(64, affine=True); InstanceNorm2d ``IN`` follows the
  residual sum, before the ReLU, in the last block of layer1 and layer2.
- Plain ``resnet18``–``resnet101`` take ``norm=`` (any ``norms`` name, replacing every norm) and
  the placement ``ibn=`` ("a", "b") as an architecture argument; ``classify.create_model`` also
  reads the older ``norm="ibn"`` / ``"ibn_a"`` / ``"ibn_b"`` as BN with that placement.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

import norms

from .registry import register


class SELayer(nn.Module):
    """Squeeze-and-excitation (Hu et al. 2018) as in the official SE-ResNet-IBN: bias-free FCs."""

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, channels // reduction, bias=False),
                                nn.ReLU(),
                                nn.Linear(channels // reduction, channels, bias=False), nn.Sigmoid())

    def forward(self, x: Tensor) -> Tensor:  # N×C×H×W -> N×C×H×W
        w = self.fc(x.mean((2, 3)))  # N×C
        return x * w[:, :, None, None]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 norm1, norm, post_in=None, **_) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = norm1(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm(planes)
        self.IN = post_in(planes) if post_in is not None else None
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:  # N×Cin×H×W -> N×C×H/s×W/s
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        if self.IN is not None:
            out = self.IN(out)
        return self.relu(out)


class Bottleneck(nn.Module):
    """1×1-3×3-1×1 bottleneck; ``cardinality``/``base_width`` give ResNeXt's grouped 3×3
    (official resnext_ibn: D = floor(planes·base_width/64), width D·C), ``se`` adds an SE layer
    before the residual sum."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, downsample: nn.Module | None,
                 norm1, norm, post_in=None, cardinality: int = 1, base_width: int = 64,
                 se: bool = False) -> None:
        super().__init__()
        width = planes if cardinality == 1 else int(math.floor(planes * base_width / 64)) * cardinality
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = norm1(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, groups=cardinality, bias=False)
        self.bn2 = norm(width)
        self.conv3 = nn.Conv2d(width, planes * 4, 1, bias=False)
        self.bn3 = norm(planes * 4)
        self.se = SELayer(planes * 4) if se else None
        self.IN = post_in(planes * 4) if post_in is not None else None
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward(self, x: Tensor) -> Tensor:  # N×Cin×H×W -> N×4C×H/s×W/s
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.se is not None:
            out = self.se(out)
        out = out + (x if self.downsample is None else self.downsample(x))
        if self.IN is not None:
            out = self.IN(out)
        return self.relu(out)


# IBN placement -> mode per stage (official: IBN-a in layer1-3, IBN-b in layer1-2)
_IBN = {None: (None, None, None, None), "a": ("a", "a", "a", None), "b": ("b", "b", None, None)}


class ResNetIBN(nn.Module):
    """ResNet with the IBN placement ``ibn`` (None, "a" or "b"; per stage see ``_IBN``) and a
    base ``norm`` for every other normalization layer."""

    def __init__(self, block: type[nn.Module], layers: list[int], num_classes: int = 1000,
                 norm: str | None = "bn", ibn: str | None = None, **block_kw) -> None:
        super().__init__()
        if ibn not in _IBN:
            raise ValueError(f"ibn must be None, 'a' or 'b', got {ibn!r}")
        ibn_cfg = _IBN[ibn]
        base = norms.get_norm_layer(norm or "bn")
        ibn_layer = norms.get_norm_layer("ibn")
        in_layer = norms.get_norm_layer("in")
        self.ibn_cfg = tuple(ibn_cfg)
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = (in_layer if ibn_cfg[0] == "b" else base)(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        for i, planes in enumerate((64, 128, 256, 512)):
            mode = ibn_cfg[i]
            blocks = []
            stride = 1 if i == 0 else 2
            for b in range(layers[i]):
                downsample = None
                if b == 0 and (stride != 1 or self.inplanes != planes * block.expansion):
                    downsample = nn.Sequential(
                        nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                        base(planes * block.expansion))
                norm1 = ibn_layer if mode == "a" else base
                post_in = in_layer if (mode == "b" and b == layers[i] - 1) else None
                blocks.append(block(self.inplanes, planes, stride if b == 0 else 1, downsample,
                                    norm1, base, post_in, **block_kw))
                self.inplanes = planes * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # the official AvgPool2d(7) on 224-px inputs
        self.fc = nn.Linear(512 * block.expansion, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: Tensor) -> Tensor:  # N×3×H×W -> N×C×H/32×W/32
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: Tensor) -> Tensor:  # N×3×H×W -> N×classes
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


_DEPTHS = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
           50: (Bottleneck, [3, 4, 6, 3]), 101: (Bottleneck, [3, 4, 23, 3])}


def _builder(depth: int, **block_kw):
    block, layers = _DEPTHS[depth]

    def build(num_classes: int = 1000, norm: str | None = None, ibn: str | None = None,
              **kw) -> ResNetIBN:
        return ResNetIBN(block, layers, num_classes, norm, ibn, **block_kw, **kw)

    return build


for _d in (18, 34, 50, 101):
    register(f"resnet{_d}", ibn=(None, "a", "b"))(_builder(_d))
    register(f"resnet{_d}_ibn_a", norms=("bn",), ibn=("a",))(_builder(_d))
    register(f"resnet{_d}_ibn_b", norms=("bn",), ibn=("b",))(_builder(_d))
register("resnext101_ibn_a", norms=("bn",), ibn=("a",))(_builder(101, cardinality=32,
                                                                  base_width=4))
register("se_resnet101_ibn_a", norms=("bn",), ibn=("a",))(_builder(101, se=True))
