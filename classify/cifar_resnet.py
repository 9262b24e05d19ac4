"""CIFAR ResNets (He et al., "Deep Residual Learning for Image Recognition", CVPR 2016, Sec. 4.2):
a 3×3 stem with 16 channels, three stages of n BasicBlocks with 16/32/64 channels (depth 6n+2:
resnet20/32/44/56/110), global average pooling and a linear classifier. The BIN paper (Nam & Kim
2018) evaluates this network on CIFAR.

Shortcuts are **option A** of He et al. (parameter-free: stride-2 subsampling and zero-padding of
the new channels), as in the paper's CIFAR experiments.

Norms: ``norm=<name>`` (bn, in, bn_in, bin, ibn, gn, ...) is every normalization layer, and the
IBN-Net placement ``ibn`` (an architecture argument) adds IN to it:
- ``ibn="a"`` (IBN-a): the IBN layer replaces ``bn1`` of every block in stages 1–2 (IBN-Net keeps
  IN out of the deepest stage);
- ``ibn="b"`` (IBN-b): the stem norm is InstanceNorm2d, and an InstanceNorm2d follows the residual
  sum (before the ReLU) in the last block of stages 1 and 2.
``classify.create_model`` also reads the older spellings ``norm="ibn"`` / ``"ibn_a"`` /
``"ibn_b"`` as BN with that placement (``registry.IBN_NORM_ALIASES``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import norms

from .registry import register


class ShortcutA(nn.Module):
    """He et al.'s option A: subsample by ``stride`` and zero-pad the extra channels."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.pad = planes - in_planes

    def forward(self, x: Tensor) -> Tensor:  # N×Cin×H×W -> N×Cout×H/s×W/s
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.pad // 2, self.pad - self.pad // 2))


class CifarBasicBlock(nn.Module):
    """conv3×3-norm-ReLU-conv3×3-norm, plus shortcut, (IN for IBN-b), ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int, norm1, norm2,
                 post_in=None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = norm1(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = norm2(planes)
        self.IN = post_in(planes) if post_in is not None else None
        self.shortcut = (ShortcutA(in_planes, planes, stride)
                         if stride != 1 or in_planes != planes else nn.Identity())

    def forward(self, x: Tensor) -> Tensor:  # N×Cin×H×W -> N×C×H/s×W/s
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + self.shortcut(x)
        if self.IN is not None:
            out = self.IN(out)
        return F.relu(out)


class CifarResNet(nn.Module):
    """CIFAR ResNet of depth 6n+2 with any ``norms`` norm (see the module docstring)."""

    def __init__(self, depth: int = 20, num_classes: int = 10, norm: str | None = "bn",
                 ibn: str | None = None, widths: tuple[int, int, int] = (16, 32, 64)) -> None:
        super().__init__()
        if (depth - 2) % 6 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2 (20, 32, 44, 56, 110), got {depth}")
        norm = norm or "bn"
        if ibn not in (None, "a", "b"):
            raise ValueError(f"ibn must be None, 'a' or 'b', got {ibn!r}")
        n = (depth - 2) // 6
        base = norms.get_norm_layer(norm)
        ibn_layer = norms.get_norm_layer("ibn")
        in_layer = norms.get_norm_layer("in")
        self.depth, self.ibn = depth, ibn
        self.conv1 = nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)
        self.bn1 = (in_layer if ibn == "b" else base)(widths[0])
        stages, in_planes = [], widths[0]
        for s, planes in enumerate(widths):
            blocks = []
            for i in range(n):
                stride = 2 if (s > 0 and i == 0) else 1
                shallow = s < 2  # IBN-Net: IN only in the shallow stages
                norm1 = ibn_layer if (ibn == "a" and shallow) else base
                post_in = in_layer if (ibn == "b" and shallow and i == n - 1) else None
                blocks.append(CifarBasicBlock(in_planes, planes, stride, norm1, base, post_in))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.fc = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def features(self, x: Tensor) -> Tensor:  # N×3×H×W -> N×64×H/4×W/4
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))

    def forward(self, x: Tensor) -> Tensor:  # N×3×H×W -> N×classes
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


def _cifar_builder(depth: int):
    def build(num_classes: int = 10, norm: str | None = None, ibn: str | None = None,
              **kw) -> CifarResNet:
        return CifarResNet(depth, num_classes=num_classes, norm=norm, ibn=ibn, **kw)

    build.__doc__ = f"CIFAR ResNet-{depth} (option-A shortcuts), IBN placement ``ibn``."
    return build


for _depth in (20, 32, 44, 56, 110):
    register(f"resnet{_depth}", input_size=32, ibn=(None, "a", "b"))(_cifar_builder(_depth))
    register(f"resnet{_depth}_ibn_a", input_size=32, ibn=("a",))(_cifar_builder(_depth))
    register(f"resnet{_depth}_ibn_b", input_size=32, ibn=("b",))(_cifar_builder(_depth))
