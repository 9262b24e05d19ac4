"""Johnson et al. (2016) feed-forward style network with a pluggable normalization layer.

The module and attribute names follow pytorch/examples' ``fast_neural_style/transformer_net.py``
exactly, so with ``norm="in"`` the state dict has the layout of its published candy / mosaic /
udnie / rain_princess models (``../shared/specs/fast_neural_style_state_dict_keys.json``).

Multi-style networks (Dumoulin et al., ICLR 2017) use conditional norms (``cin``, ``cbin``, ...:
one γ, β — and BIN's ρ — per style); the style names live in the model file's ``styles``
metadata and ``style_selection`` / ``use_style`` turn "candy" or "candy:0.5,mosaic:0.5" into the
selection ``norms.set_style`` takes.
"""
from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import engine.io
import norms

from .config import OUTPUT_CHOICES as OUTPUTS  # one list for the CLI and the model


@dataclass
class StyleConfig:
    """Architecture of a ``TransformerNet``; stored in every checkpoint to rebuild the model."""

    norm: str = "in"  # a plain norm, or a conditional one ("cin", "cbin", ...)
    base_channels: int = 32  # 32 → 64 → 128 as in Johnson et al.
    num_residual: int = 5
    num_styles: int = 1  # > 1: conditional norms (one γ, β, ρ row per style)
    # "linear": pytorch/examples' raw conv output (0–255 only after long training);
    # "residual": y = 263·σ(logit((x + 4)/263) + z) − 4 and "additive": y = x + z, with the last conv
    # zero-initialised, so the network starts as the identity (see TransformerNet) — no black
    # early outputs, but training stays near the photo (reports/style-quality, "The output head").
    output: str = "linear"

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

        norms.norm_spec(self.norm)  # unknown names: a ValueError listing the known ones
        check_range("base channels", self.base_channels, 1, 128)
        check_range("number of residual blocks", self.num_residual, 0, 32)
        check_range("number of styles", self.num_styles, 1, 1024)
        if self.output not in OUTPUTS:
            raise ValueError(f"unknown network output {self.output!r}; known: {', '.join(OUTPUTS)}")

    @property
    def conditional(self) -> bool:
        """True when the network has per-style norm parameters (a conditional norm, or > 1 style)."""
        return norms.is_conditional(self.norm) or self.num_styles > 1

    @property
    def plain_norm(self) -> str:
        """The norm without its conditional prefix: "cbin" → "bin"."""
        return norms.plain_name(self.norm)

    def norm_layer(self) -> Callable[[int], nn.Module]:
        """The factory ``f(num_channels)`` of the network's norm layers."""
        return norms.get_norm_layer(self.norm,
                                    num_styles=self.num_styles if self.conditional else None)


# logit(x̃) of the content image needs x̃ inside (0, 1): 0–255 is mapped to [4/263, 259/263]
_SKIP_PAD = 4.0


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
        if self.upsample and torch.compiler.is_compiling():
            # the same nearest ×u as a broadcast: inductor turns interpolate's gather into scalar
            # code (15 % of a compiled bf16 pass at 512² on an AVX-512 CPU), this it vectorises
            n, c, h, w = x.shape
            u = int(self.upsample)
            x = x[:, :, :, None, :, None].expand(n, c, h, u, w, u).reshape(n, c, h * u, w * u)
        elif self.upsample:
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

    Input and output are RGB in 0–255. ``output="linear"`` (pytorch/examples; the default) has no
    output activation (clamp when saving). ``output="residual"`` computes y = 263·σ(logit(x̃) + z) − 4
    with x̃ = (x + 4)/263 and ``output="additive"`` y = x + z, from the last conv's z, initialised to
    zero (so y = x at the start). The linear head's first ~100 steps are near-black (its last conv
    starts at ≈ ±0.3 and Adam moves it by ≈ 1 per step), but it then draws the painting; the two
    photo heads start as the photo and stay near it after 500 steps at 128 px (candy S ≈ 0.5
    against 0.9): a colour grade with black holes where the sigmoid saturates (residual), or the
    photo with red halos (additive) — reports/style-quality, "The output head". Any spatial size
    works: the input is padded to a multiple of 4 (reflection) and the output cropped back.
    Conditional configs select their style with ``norms.set_style`` (style 0 when built).
    """

    def __init__(self, norm: str = "in", base_channels: int = 32, num_residual: int = 5,
                 config: StyleConfig | None = None) -> None:
        super().__init__()
        self.config = config or StyleConfig(norm=norm, base_channels=base_channels,
                                            num_residual=num_residual)
        self.config.validate()
        norm_layer = self.config.norm_layer()
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
        if self.config.output in ("residual", "additive"):  # start as the identity (class docstring)
            nn.init.zeros_(self.deconv3.conv2d.weight)
            nn.init.zeros_(self.deconv3.conv2d.bias)
        if self.config.conditional:
            norms.set_style(self, 0)

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
        if self.config.output == "residual":  # in float32: logit/sigmoid near 0 and 255
            xt = (x.float() + _SKIP_PAD) / (255.0 + 2 * _SKIP_PAD)
            # N×3×H×W in (−4, 259); exactly x where z = 0
            y = (255.0 + 2 * _SKIP_PAD) * torch.sigmoid(torch.logit(xt) + y.float()) - _SKIP_PAD
        elif self.config.output == "additive":  # float32: bf16 holds 0–255 only to ±1
            y = x.float() + y.float()  # N×3×H×W; exactly x where z = 0, no saturation
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


# ------------------------------------------------------------------------------ multi-style

def style_names(meta: dict[str, Any], num_styles: int) -> list[str]:
    """The style names of a model from its metadata (``styles``), or "style0".."styleN-1"."""
    names = meta.get("styles") if isinstance(meta, dict) else None
    if isinstance(names, list) and len(names) == num_styles and all(isinstance(n, str) for n in names):
        return list(names)
    if num_styles == 1 and isinstance(meta, dict) and isinstance(meta.get("style"), str):
        return [meta["style"]]
    return [f"style{i}" for i in range(num_styles)]


def style_selection(spec: str | int | Sequence[float] | None, names: Sequence[str]
                    ) -> int | Tensor:
    """What ``norms.set_style`` takes for a user's style choice over ``names``.

    ``spec``: ``None`` (the first style), a name ("candy"), an index (2 or "2"), a blend
    "candy:0.5,mosaic:0.5" (weights ≥ 0, rescaled to sum to 1: Dumoulin et al.'s convex
    combination of γ, β) or a weight per style. One-line ``ValueError`` naming the known styles.
    """
    from engine.io import clip

    n = len(names)
    known = ", ".join(names)
    if spec is None or (isinstance(spec, str) and not spec.strip()):
        return 0
    if isinstance(spec, bool):
        raise ValueError(f"style must be a name or an index, got {clip(repr(spec))}")
    if isinstance(spec, int):
        if not 0 <= spec < n:
            raise ValueError(f"style {spec} does not exist: the model has {n} styles ({known})")
        return spec
    if isinstance(spec, Mapping):  # {"candy": 0.7, "mosaic": 0.3}: a blend by name, not parsed
        lower = [m.lower() for m in names]
        bad = [k for k in spec if str(k).strip().lower() not in lower]
        if bad:
            raise ValueError(f"no style {str(bad[0]).strip()!r} in this model; its styles: {known}")
        spec = [sum(float(v) for k, v in spec.items() if str(k).strip().lower() == m) for m in lower]
    if not isinstance(spec, str):
        w = torch.as_tensor([float(v) for v in spec], dtype=torch.float32)
        if w.numel() != n:
            raise ValueError(f"{w.numel()} style weights for a model with {n} styles ({known})")
        return _normalised(w, known)
    lookup = {name.lower(): i for i, name in enumerate(names)}

    def index(name: str) -> int:
        key = name.strip().lower()
        if key in lookup:
            return lookup[key]
        if key.isdigit() and int(key) < n:
            return int(key)
        raise ValueError(f"no style {clip(repr(name.strip()))} in this model; its styles: {known}")

    if ":" not in spec and "," not in spec:
        return index(spec)
    w = torch.zeros(n)
    for part in spec.split(","):
        if not part.strip():
            continue
        name, sep, weight = part.rpartition(":")
        if not sep:
            raise ValueError(f"style blend {clip(repr(spec))}: write NAME:WEIGHT,NAME:WEIGHT "
                             "(e.g. candy:0.5,mosaic:0.5)")
        try:
            value = float(weight)
        except ValueError:
            raise ValueError(f"style blend {clip(repr(spec))}: {clip(repr(weight.strip()))} is not "
                             "a number") from None
        w[index(name)] += value
    return _normalised(w, known)


def _normalised(w: Tensor, known: str) -> Tensor:
    if not torch.isfinite(w).all() or (w < 0).any() or float(w.sum()) <= 0:
        raise ValueError(f"style weights must be ≥ 0 with a positive sum (styles: {known})")
    return w / w.sum()


@contextlib.contextmanager
def use_style(net: nn.Module, spec: str | int | Sequence[float] | None,
              names: Sequence[str] | None = None) -> Iterator[None]:
    """Run ``net`` with the style ``spec`` (see ``style_selection``) for the duration of a block;
    the previous selection is restored after. Single-style networks accept only ``None`` or
    their one style's name."""
    count = norms.num_styles(net)
    names = list(names) if names is not None else [f"style{i}" for i in range(max(count, 1))]
    if count == 0:  # plain network: one style
        if spec not in (None, 0, "") and not (isinstance(spec, str) and spec.strip().lower()
                                             in {n.lower() for n in names} | {"0"}):
            raise ValueError(f"this model has one style ({', '.join(names)}); "
                             "it cannot select or blend styles")
        yield
        return
    if len(names) != count:
        raise ValueError(f"{len(names)} style names for a network with {count} styles")
    with norms.style(net, style_selection(spec, names)):
        yield


# ------------------------------------------------------------------------------ model files

def load_style_net(path: str | Path) -> tuple[TransformerNet, dict[str, Any]]:
    """(network, metadata) of a style model file. Kind and config bounds are checked before any
    tensor is read or a layer is built (``engine.checkpoint.read_model``)."""
    from engine.checkpoint import read_model

    tensors, meta = read_model(path, "style", validate=StyleConfig.from_dict)
    net = TransformerNet(config=StyleConfig.from_dict(meta["config"]))
    from engine.checkpoint import state_mismatch

    why = state_mismatch(net.state_dict(), tensors)
    if why:
        raise ValueError(f"{path}: weights do not match its config: {why}")
    try:
        net.load_state_dict({k: v.float() if v.is_floating_point() else v
                             for k, v in tensors.items()}, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{path}: weights do not match its config "
                         f"({str(exc).strip().splitlines()[0]})") from None
    return net, meta


def resolve_model_file(spec: str | Path) -> Path:
    """A shipped style model's file (by manifest name) or an existing model file."""
    import weights

    return weights.resolve(spec, "stylize")


@torch.no_grad()
def merge_styles(specs: Sequence[str | Path]) -> tuple[TransformerNet, list[str]]:
    """One network holding the styles of several models that were fine-tuned (norm-only,
    ``stylize train --from``) from the same base: every weight outside the per-style rows of
    the conditional norms must be identical in all of them (else a one-line ``ValueError``
    naming the first that differs). Styles keep their order, first model first; a style name
    seen again is kept once if its rows are identical and refused otherwise. Returns the
    merged network (conditional norms) and its style names."""
    if len(specs) < 2:
        raise ValueError("merge needs at least two models")
    nets = []
    for spec in specs:
        net, meta = load_style_net(resolve_model_file(spec))
        if not net.config.conditional:
            norms.make_conditional(net, 1)
            net.config = dataclasses.replace(net.config,
                                             norm=norms.conditional_name(net.config.norm))
        nets.append((str(spec), net, style_names(meta, norms.num_styles(net))))
    first_spec, base, names = nets[0]
    tables = {f"{ln}.{an}" for ln, layer in norms.conditional_layers(base)
              for an in layer.affine_names}
    shared = {k: v for k, v in base.state_dict().items() if k not in tables}
    rows: dict[str, list[Tensor]] = {k: list(base.state_dict()[k]) for k in tables}
    kept = list(names)
    for spec, net, its_names in nets[1:]:
        if dataclasses.replace(net.config, num_styles=1) != dataclasses.replace(base.config, num_styles=1):
            raise ValueError(f"{spec} is a different network ({net.config.norm}, "
                             f"{net.config.base_channels} channels) from {first_spec}")
        sd = net.state_dict()
        for k, v in shared.items():
            if not torch.equal(sd[k], v):
                raise ValueError(f"{spec} and {first_spec} were not fine-tuned from one base: "
                                 f"{k} differs (only norm-only fine-tunes can be merged)")
        for i, name in enumerate(its_names):
            lower = [n.lower() for n in kept]
            if name.lower() in lower:
                j = lower.index(name.lower())
                if any(not torch.equal(sd[k][i], rows[k][j]) for k in tables):
                    raise ValueError(f"two different styles are both named {name!r} "
                                     f"({spec} and an earlier model); rename one")
                continue
            kept.append(name)
            for k in tables:
                rows[k].append(sd[k][i])
    merged = TransformerNet(config=dataclasses.replace(base.config, num_styles=len(kept)))
    state = {**shared, **{k: torch.stack(v) for k, v in rows.items()}}
    merged.load_state_dict(state, strict=True)
    return merged.eval(), kept


@dataclass
class StyleModelInfo:
    """One style model found by ``list_style_models`` (read from metadata only)."""

    name: str
    path: Path
    source: str  # "shipped" | "local"
    norm: str
    styles: list[str]
    steps: int | None = None


def list_style_models(runs: str | Path | None = "runs") -> list[StyleModelInfo]:
    """The shipped style models, then the ``model.safetensors`` of run folders under ``runs``
    (named after their folder), with their norm and styles; files that are not style models
    are skipped."""
    import weights
    from engine.checkpoint import read_metadata

    found: list[StyleModelInfo] = []

    def add(name: str, path: Path, source: str) -> None:
        try:
            meta = read_metadata(path)
        except ValueError:
            return
        cfg = meta.get("config") if isinstance(meta.get("config"), dict) else {}
        if meta.get("kind") != "style" or not cfg:
            return
        n = cfg.get("num_styles", 1) if isinstance(cfg.get("num_styles", 1), int) else 1
        steps = meta.get("steps") if isinstance(meta.get("steps"), int) else None
        found.append(StyleModelInfo(name, path, source, str(cfg.get("norm", "?")),
                                    style_names(meta, n), steps))

    for name in weights.names("stylize"):
        add(name, weights.path(name, "stylize"), "shipped")
    if runs is not None and Path(runs).is_dir():
        for path in sorted(Path(runs).rglob("model.safetensors")):
            add(path.parent.name, path, "local")
    return found
