"""classify models: every registered architecture runs and trains; official IBN-Net layouts and
functions; checkpoint loading."""
from __future__ import annotations

import json
import re

import pytest
import torch
from torch import nn

import classify
import norms
from conftest import need_shared

CIFAR = [n for n in classify.list_models() if classify.default_input_size(n) == 32]
IMAGENET = [n for n in classify.list_models() if classify.default_input_size(n) != 32]
OFFICIAL = ["resnet18_ibn_a", "resnet34_ibn_a", "resnet50_ibn_a", "resnet101_ibn_a",
            "resnet18_ibn_b", "resnet34_ibn_b", "resnet50_ibn_b", "resnet101_ibn_b",
            "resnext101_ibn_a", "se_resnet101_ibn_a", "densenet121_ibn_a", "densenet169_ibn_a"]


def _forward_backward(model: nn.Module, x: torch.Tensor, classes: int) -> None:
    model.train()
    y = model(x)
    assert y.shape == (x.shape[0], classes)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing[:5]}"


def test_registry_lists_everything_and_rejects_unknown():
    names = classify.list_models()
    for n in OFFICIAL + ["resnet18", "resnet101", "resnet20", "resnet110", "resnet20_ibn_b"]:
        assert n in names
    with pytest.raises(ValueError, match="known models: .*resnet20"):
        classify.create_model("resnet21")


@pytest.mark.parametrize("name", CIFAR)
def test_cifar_models_forward_backward(name):
    _forward_backward(classify.create_model(name, num_classes=10), torch.randn(2, 3, 16, 16), 10)


@pytest.mark.parametrize("norm", norms.NORM_NAMES)
def test_resnet20_every_norm(norm):
    model = classify.create_model("resnet20", num_classes=10, norm=norm)
    _forward_backward(model, torch.randn(2, 3, 16, 16), 10)
    kinds = {type(m) for m in model.modules()}
    if norm == "ibn":  # IBN-a placement: IBN in stages 1-2 only, BN elsewhere
        assert isinstance(model.layer1[0].bn1, norms.IBN) and isinstance(model.layer2[2].bn1, norms.IBN)
        assert not isinstance(model.layer3[0].bn1, norms.IBN)
        assert type(model.layer1[0].bn2) is norms.BatchNorm2d
    else:
        want = type(norms.create_norm(norm, 16))
        assert want in kinds and norms.BatchNorm2d not in kinds - {want} or norm == "bn"


def test_cifar_ibn_b_placement():
    m = classify.create_model("resnet20_ibn_b", num_classes=10)
    assert isinstance(m.bn1, norms.InstanceNorm2d)
    assert [b.IN is not None for b in m.layer1] == [False, False, True]
    assert m.layer2[-1].IN is not None and all(b.IN is None for b in m.layer3)
    assert not any(isinstance(x, norms.IBN) for x in m.modules())


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_models_forward_backward(name):
    _forward_backward(classify.create_model(name, num_classes=5), torch.randn(2, 3, 32, 32), 5)


@pytest.mark.parametrize("norm", ["in", "bn_in", "bin", "gn", "ibn"])
def test_plain_resnet_takes_any_norm(norm):
    m = classify.create_model("resnet18", num_classes=3, norm=norm)
    _forward_backward(m, torch.randn(2, 3, 64, 64), 3)
    if norm == "bin":
        assert len(list(norms.iter_gates(m))) == 1 + 4 * 4 + 3  # stem, 2 per block, downsamples


def test_official_keys_and_shapes_match_spec():
    spec = json.loads(need_shared("specs", "ibnnet_state_dict_keys.json").read_text())
    assert sorted(spec) == sorted(OFFICIAL)
    for name, keys in spec.items():
        with torch.device("meta"):
            m = classify.create_model(name)
        got = {k: list(v.shape) for k, v in m.state_dict().items()}
        assert got == keys, name


def test_densenet_ibn_split_is_bn_first_ratio_04():
    with torch.device("meta"):
        m = classify.create_model("densenet121_ibn_a")
    n1 = m.features.denseblock1.denselayer1.norm1
    assert isinstance(n1, norms.IBN) and (n1.BN.num_features, n1.IN.num_features) == (38, 26)
    assert not isinstance(m.features.denseblock1.denselayer2.norm1, norms.IBN)
    assert not isinstance(m.features.denseblock4.denselayer1.norm1, norms.IBN)


# ---- an independent reference of the official code, written from the spec's facts ----------

class RefIBN(nn.Module):
    def __init__(self, planes):
        super().__init__()
        self.half = int(planes * 0.5)
        self.IN = nn.InstanceNorm2d(self.half, affine=True)
        self.BN = nn.BatchNorm2d(planes - self.half)

    def forward(self, x):
        a, b = torch.split(x, self.half, 1)
        return torch.cat((self.IN(a.contiguous()), self.BN(b.contiguous())), 1)


class RefBlock(nn.Module):
    def __init__(self, inplanes, planes, ibn, stride=1, downsample=None):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = RefIBN(planes) if ibn == "a" else nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.IN = nn.InstanceNorm2d(planes, affine=True) if ibn == "b" else None
        self.downsample = downsample

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        if self.IN is not None:
            out = self.IN(out)
        return torch.relu(out)


class RefResNet18(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.InstanceNorm2d(64, affine=True) if cfg[0] == "b" else nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        for i, planes in enumerate((64, 128, 256, 512)):
            stride = 1 if i == 0 else 2
            ds = None
            if stride != 1 or self.inplanes != planes:
                ds = nn.Sequential(nn.Conv2d(self.inplanes, planes, 1, stride, bias=False),
                                   nn.BatchNorm2d(planes))
            ibn = cfg[i]
            blocks = [RefBlock(self.inplanes, planes, None if ibn == "b" else ibn, stride, ds)]
            self.inplanes = planes
            blocks.append(RefBlock(planes, planes, ibn))  # the last block of two
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(512, 1000)

    def forward(self, x):
        x = self.maxpool(torch.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean((2, 3)))


def _randomise(model: nn.Module) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    sd = {}
    for k, v in model.state_dict().items():
        if k.endswith("num_batches_tracked"):
            sd[k] = torch.tensor(3)
        elif k.endswith("running_var"):
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
        elif k.endswith(("running_mean", "bias")):
            sd[k] = torch.randn(v.shape, generator=g) * 0.1
        elif v.ndim == 1:  # norm weights
            sd[k] = torch.rand(v.shape, generator=g) + 0.5
        else:
            sd[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
    return sd


@pytest.mark.parametrize("name,cfg", [("resnet18_ibn_a", ("a", "a", "a", None)),
                                      ("resnet18_ibn_b", ("b", "b", None, None))])
def test_same_weights_same_outputs_as_reference(name, cfg):
    ref = RefResNet18(cfg)
    sd = _randomise(ref)
    ref.load_state_dict(sd)
    ours = classify.create_model(name)
    classify.load_state_strict(ours, sd)  # exact key set of the reference
    x = torch.randn(2, 3, 64, 64)
    for mode in ("eval", "train"):
        ref.train(mode == "train")
        ours.train(mode == "train")
        with torch.no_grad():
            torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4, msg=mode)
    # train mode updated the running statistics identically
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[k], v, rtol=1e-5, atol=1e-6, msg=k)


def test_load_official_pth_wrapped_and_prefixed(tmp_path):
    src = classify.create_model("resnet18_ibn_b")
    sd = {"module." + k: v for k, v in _randomise(src).items()}
    path = tmp_path / "r18b.pth"
    torch.save({"state_dict": sd}, path)
    m = classify.load_official("resnet18_ibn_b", path).eval()
    for k, v in m.state_dict().items():
        assert torch.equal(v, sd["module." + k])
    clf = classify.load_classifier(f"resnet18_ibn_b:{path}")
    assert len(clf.class_names) == 1000 and clf.class_names[0] == "tench"


def test_load_official_mismatch_names_first_keys(tmp_path):
    sd = classify.create_model("resnet18_ibn_a").state_dict()
    path = tmp_path / "a.pth"
    torch.save(sd, path)
    with pytest.raises(ValueError, match=r"missing \(first: layer1.0.bn1.weight.*unexpected \(first: bn1.running_mean"):
        classify.load_official("resnet18_ibn_b", path)
    with pytest.raises(ValueError, match="bad.pth is not a PyTorch checkpoint file"):
        (tmp_path / "bad.pth").write_bytes(b"not a checkpoint")
        classify.load_official("resnet18_ibn_a", tmp_path / "bad.pth")


def test_safetensors_roundtrip(tmp_path):
    m = classify.create_model("resnet20", num_classes=10, norm="bin").eval()
    p = classify.save_classifier(tmp_path / "m.safetensors", m, class_names=list("abcdefghij"),
                                 mean=[0.5] * 3, std=[0.25] * 3, image_size=32, half=True)
    clf = classify.load_classifier(p)
    assert clf.config.norm == "bin" and clf.class_names[2] == "c" and clf.image_size == 32
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(clf.model(x), m(x), rtol=2e-2, atol=2e-2)


# ---- IBN placement is an architecture argument ------------------------------------------------

def _layout(m: nn.Module) -> dict[str, str]:
    return {n: type(x).__name__ for n, x in m.named_modules()}


@pytest.mark.parametrize("arch,placement", [("resnet20", "a"), ("resnet20", "b"),
                                            ("resnet18", "a"), ("resnet18", "b")])
def test_ibn_placement_argument_equals_the_named_architecture_and_old_norm_names(arch, placement):
    with torch.device("meta"):
        by_arg = classify.create_model(arch, ibn=placement)
        by_name = classify.create_model(f"{arch}_ibn_{placement}")
        by_old_norm = classify.create_model(arch, norm=f"ibn_{placement}")
    assert _layout(by_arg) == _layout(by_name) == _layout(by_old_norm)
    assert by_arg.state_dict().keys() == by_name.state_dict().keys()
    assert by_arg.config.norm is None and by_arg.config.kwargs == {"ibn": placement}
    with torch.device("meta"):
        assert _layout(classify.build_from_config(by_arg.config.to_dict())) == _layout(by_arg)
    if placement == "a":  # "ibn" as a classifier norm: what the shipped resnet20 IBN-a says
        with torch.device("meta"):
            assert _layout(classify.create_model(arch, norm="ibn")) == _layout(by_arg)


def test_ibn_placement_with_another_base_norm():
    m = classify.create_model("resnet20", num_classes=10, norm="bin", ibn="a")
    assert isinstance(m.layer1[0].bn1, norms.IBN) and isinstance(m.layer2[0].bn1, norms.IBN)
    assert type(m.layer3[0].bn1) is norms.BatchInstanceNorm2d
    assert type(m.layer1[0].bn2) is norms.BatchInstanceNorm2d
    _forward_backward(m, torch.randn(2, 3, 16, 16), 10)


@pytest.mark.parametrize("kw,match", [
    (dict(name="resnet20_ibn_a", ibn="b"), "takes the IBN placement.* IBN-a, not IBN-b"),
    (dict(name="resnet20", norm="ibn_b", ibn="a"), "means the IBN-b placement"),
    (dict(name="resnet20", ibn="c"), "unknown IBN placement 'c'; known: a, b"),
    (dict(name="densenet121_ibn_a", ibn="b"), "IBN-a, not IBN-b"),
    (dict(name="resnet20", norm="xx"), r"unknown norm\(s\) xx; known: bn, in"),
    (dict(name="resnet20", norm="cbin"), r"unknown norm\(s\) cbin; known: bn, in"),
])
def test_bad_placement_or_norm_is_one_clear_error(kw, match):
    with pytest.raises(ValueError, match=match):
        classify.create_model(**kw)


def test_shipped_ibn_a_classifier_has_the_ibn_a_layout():
    import weights

    if "cifar10_resnet20_ibn_a" not in weights.names("classify"):
        pytest.skip("no shipped IBN-a classifier in this build")
    clf = classify.load_classifier("cifar10_resnet20_ibn_a")
    assert (clf.config.arch, clf.config.norm) == ("resnet20", "ibn")  # as saved, still read
    assert _layout(clf.model) == _layout(classify.create_model("resnet20", num_classes=10, ibn="a"))


def test_saved_config_checks_ibn_placement_and_bounded_arguments():
    """A saved config carries the IBN placement (an architecture argument) beside the bounded
    per-family arguments; both are checked before anything is built."""
    from classify.registry import ModelConfig

    ok = ModelConfig.from_dict({"arch": "resnet20", "num_classes": 10, "norm": "bn",
                                "kwargs": {"ibn": "b", "widths": [8, 16, 32]}})
    assert ok.kwargs["ibn"] == "b"
    bad = [({"arch": "resnet20", "kwargs": {"ibn": "z"}}, "unknown IBN placement"),
           ({"arch": "resnet20_ibn_b", "kwargs": {"ibn": "a"}}, "IBN-b, not IBN-a"),
           ({"arch": "resnet20", "kwargs": {"ibn": ["a"]}}, "placement name"),
           ({"arch": "resnet20", "kwargs": {"ibn": "a", "widths": [4096] * 3}}, "widths"),
           ({"arch": "resnet18", "kwargs": {"depth": 1000}}, "takes no argument 'depth' (it takes: ibn)"),
           ({"arch": "resnet20", "num_classes": 10**6}, "number of classes")]
    for d, msg in bad:
        with pytest.raises(ValueError, match=re.escape(msg)):
            ModelConfig.from_dict(d)
