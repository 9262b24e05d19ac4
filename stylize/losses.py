"""VGG perceptual losses (Johnson et al. 2016, Sec. 3): feature reconstruction (content) loss,
Gram-matrix style loss (Gatys et al. 2016, eq. 3, Gram normalised by C·H·W) and total variation.

The loss network is a frozen, pretrained VGG. It is never random: ``load_vgg_encoder`` reads
real weights (a torchvision VGG-16/19 state dict, the "normalised VGG-19" encoder that
WCT/AdaIN/LinearStyleTransfer ship, or torchvision's own cached VGG-16) and otherwise raises a
one-line ``ValueError`` that says how to provide them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

import engine.io

# conv names in order; "P" is a 2×2 max-pool.
VGG16_PLAN = ["1_1", "1_2", "P", "2_1", "2_2", "P", "3_1", "3_2", "3_3", "P",
              "4_1", "4_2", "4_3", "P", "5_1", "5_2", "5_3"]
VGG19_PLAN = ["1_1", "1_2", "P", "2_1", "2_2", "P", "3_1", "3_2", "3_3", "3_4", "P",
              "4_1", "4_2", "4_3", "4_4", "P", "5_1", "5_2", "5_3", "5_4"]
# torchvision's features indices of each conv (ReLU right after, pools in between)
_TV16_CONV_IDX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
_TV19_CONV_IDX = [0, 2, 5, 7, 10, 12, 14, 16, 19, 21, 23, 25, 28, 30, 32, 34]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

NO_WEIGHTS_HINT = ("no VGG weights for the perceptual loss: pass --vgg-weights PATH (a torchvision "
                   "VGG-16/19 state dict, or the normalised VGG-19 encoder, e.g. "
                   "../shared/weights/vgg19_normalised_relu3_1.pth), or --vgg-weights torchvision "
                   "to download VGG16_Weights.IMAGENET1K_V1 into torchvision's cache ({cache})")


@dataclass
class VGGSpec:
    """Which taps a loaded encoder offers and the defaults for its feature scale."""

    kind: str  # "torchvision-vgg16" | "torchvision-vgg19" | "normalised-vgg19"
    style_layers: list[str] = field(default_factory=list)
    content_layer: str = ""
    # Loss weights that balance content and style for this encoder's feature scale.
    content_weight: float = 1e5
    style_weight: float = 1e10


class VGGEncoder(nn.Module):
    """A frozen VGG up to its last needed tap. Input: RGB in 0–255; output: {tap: features}."""

    def __init__(self, convs: list[nn.Conv2d], plan: list[str], taps: list[str], *,
                 normalised: bool, first: nn.Conv2d | None = None, kind: str = "") -> None:
        super().__init__()
        self.kind = kind
        self.normalised = normalised
        self.first = first  # normalised VGG: fixed 1×1 conv, RGB [0,1] → BGR·255 − Caffe mean
        self.taps = list(taps)
        last = max(self._conv_names(plan).index(t.removeprefix("relu")) for t in taps)
        layers: list[tuple[str, nn.Module]] = []
        names = iter(convs)
        seen = 0
        for item in plan:
            if seen > last:
                break
            if item == "P":
                layers.append(("pool", nn.MaxPool2d(2, 2)))
                continue
            layers.append((f"relu{item}", next(names)))
            seen += 1
        self.names = [n for n, _ in layers]
        self.layers = nn.ModuleList([m for _, m in layers])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1) * 255)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1) * 255)
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def _conv_names(plan: list[str]) -> list[str]:
        return [p for p in plan if p != "P"]

    def forward(self, x: Tensor, taps: Sequence[str] | None = None) -> dict[str, Tensor]:
        # N×3×H×W (0–255) -> {tap: N×C×h×w}; ``taps`` (default: all) stops at the deepest asked
        if self.normalised:
            h = self.first(x / 255.0)
        else:
            h = (x - self.mean) / self.std
        out: dict[str, Tensor] = {}
        want = set(self.taps if taps is None else taps)
        for name, layer in zip(self.names, self.layers):
            if name == "pool":
                h = F.max_pool2d(h, 2, 2)
            else:
                if self.normalised:  # WCT/AdaIN's encoder pads by reflection, torchvision by zeros
                    h = F.relu(F.conv2d(F.pad(h, (1, 1, 1, 1), mode="reflect"),
                                        layer.weight, layer.bias))
                else:
                    h = F.relu(layer(h))
                if name in want:
                    out[name] = h
                    if len(out) == len(want):
                        break
        return out


def _conv_from(w: Tensor, b: Tensor | None, padding: int) -> nn.Conv2d:
    conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], padding=padding, bias=b is not None)
    with torch.no_grad():
        conv.weight.copy_(w.float())
        if b is not None:
            conv.bias.copy_(b.float())
    return conv


def _numbered_convs(state: dict[str, Tensor]) -> list[tuple[int, Tensor, Tensor | None]]:
    """(index, weight, bias) of every 4-D weight whose key ends in ``<number>.weight`` or
    ``conv<number>.weight``, in numeric order; other keys (classifier, prefixes) are ignored."""
    found = []
    for k, v in state.items():
        m = re.search(r"(?:^|\.)(?:conv)?(\d+)\.weight$", k)
        if m and isinstance(v, Tensor) and v.ndim == 4:
            if k.startswith("classifier"):
                continue
            bias = state.get(k[: -len("weight")] + "bias")
            found.append((int(m.group(1)), v, bias))
    found.sort(key=lambda t: t[0])
    return found


def encoder_from_state_dict(state: dict[str, Tensor], source: str = "state dict") -> VGGEncoder:
    """Build the loss network from a torchvision VGG-16/19 state dict (any prefix of
    ``features``) or a normalised VGG-19 encoder (first a 3×3×1×1 conv)."""
    convs = _numbered_convs(state)
    if not convs:
        raise ValueError(f"{source} holds no VGG conv weights (expected torchvision "
                         "'features.N.weight' keys or a normalised VGG-19 encoder)")
    idx = [i for i, _, _ in convs]
    if tuple(convs[0][1].shape) == (3, 3, 1, 1):
        # normalised VGG-19 (AdaIN/WCT: Sequential indices; LinearStyleTransfer: conv1..convN)
        first = _conv_from(convs[0][1], convs[0][2], 0)
        body = [_conv_from(w, b, 0) for _, w, b in convs[1:]]
        plan, kind, normalised = VGG19_PLAN, "normalised-vgg19", True
    elif tuple(convs[0][1].shape[1:]) == (3, 3, 3):
        first, normalised = None, False
        if set(idx) <= set(_TV16_CONV_IDX) and idx == _TV16_CONV_IDX[: len(idx)] and 16 not in idx:
            plan, kind = VGG16_PLAN, "torchvision-vgg16"
        elif idx == _TV19_CONV_IDX[: len(idx)]:
            plan, kind = VGG19_PLAN, "torchvision-vgg19"
        else:
            raise ValueError(f"{source}: conv indices {idx[:6]}… match neither torchvision "
                             "VGG-16 nor VGG-19 features")
        body = [_conv_from(w, b, 1) for _, w, b in convs]
    else:
        raise ValueError(f"{source}: first conv has shape {tuple(convs[0][1].shape)}, not a VGG")
    names = [f"relu{n}" for n in plan if n != "P"][: len(body)]
    # check the channel chain so that a foreign network fails here with one line, not in forward
    expect = {"1": 64, "2": 128, "3": 256, "4": 512, "5": 512}
    for name, conv in zip(names, body):
        if conv.weight.shape[0] != expect[name[4]] or conv.weight.shape[2:] != (3, 3):
            raise ValueError(f"{source}: {name} has shape {tuple(conv.weight.shape)}, not VGG's")
    spec = default_spec(kind, names)
    taps = sorted(set(spec.style_layers) | {spec.content_layer}, key=names.index)
    enc = VGGEncoder(body, plan, taps, normalised=normalised, first=first, kind=kind)
    enc.spec = spec
    return enc


def default_spec(kind: str, covered: list[str]) -> VGGSpec:
    """The taps a loaded encoder is used with: Johnson et al.'s VGG-16 taps, Gatys' relu*_1
    taps for VGG-19, restricted to the layers the weights cover."""
    if kind == "torchvision-vgg16":
        style, content, cw, sw = ["relu1_2", "relu2_2", "relu3_3", "relu4_3"], "relu2_2", 1e5, 1e10
    elif kind == "torchvision-vgg19":
        style, content, cw, sw = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"], "relu2_2", 1e5, 1e10
    else:  # normalised VGG-19: Caffe scale (features ≈ 58× torchvision's), so smaller weights
        style, content, cw, sw = ["relu1_1", "relu2_1", "relu3_1", "relu4_1"], "relu2_1", 1.0, 5e3
    style = [s for s in style if s in covered]
    if not style:
        raise ValueError(f"VGG weights cover only {covered}: too shallow for a style loss")
    if content not in covered:
        content = style[-1] if "relu2_1" not in covered else "relu2_1"
    return VGGSpec(kind=kind, style_layers=style, content_layer=content, content_weight=cw,
                   style_weight=sw)


def torchvision_cache_file() -> Path:
    """Where torchvision keeps ``VGG16_Weights.IMAGENET1K_V1`` once downloaded."""
    from torchvision.models import VGG16_Weights

    url = VGG16_Weights.IMAGENET1K_V1.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def load_vgg_encoder(weights: str | Path | None = None) -> VGGEncoder:
    """The loss network for training.

    ``weights``: a path to VGG weights (see ``encoder_from_state_dict``); ``None`` uses
    torchvision's VGG-16 from its cache only; ``"torchvision"`` lets torchvision download it once
    (for users with a network). Raises ``ValueError`` (one line) when no weights are available.
    """
    if weights is None or str(weights) == "torchvision":
        cache = torchvision_cache_file()
        if not cache.is_file():
            if weights is None:
                raise ValueError(NO_WEIGHTS_HINT.format(cache=cache))
            from torchvision.models import VGG16_Weights, vgg16

            try:
                model = vgg16(weights=VGG16_Weights.IMAGENET1K_V1)  # downloads into the cache
            except Exception as exc:  # network errors come in many types
                raise ValueError(f"could not download torchvision's VGG-16 ({exc}); "
                                 + NO_WEIGHTS_HINT.format(cache=cache)) from None
            return encoder_from_state_dict(model.state_dict(), "torchvision VGG-16")
        return encoder_from_state_dict(engine.io.load_torch(cache), str(cache))
    path = Path(weights)
    if not path.is_file():
        raise ValueError(f"VGG weights file {path} does not exist; "
                         + NO_WEIGHTS_HINT.format(cache=torchvision_cache_file()))
    state = engine.io.load_torch(path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state dict")
    return encoder_from_state_dict(state, str(path))


def gram_matrix(f: Tensor) -> Tensor:  # N×C×H×W -> N×C×C, normalised by C·H·W
    n, c, h, w = f.shape
    f = f.reshape(n, c, h * w).float()
    return f.bmm(f.transpose(1, 2)) / (c * h * w)


def total_variation(y: Tensor) -> Tensor:
    """Anisotropic TV (Johnson et al. 2016, Sec. 3.3), mean absolute neighbour difference."""
    return (y[..., 1:, :] - y[..., :-1, :]).abs().mean() + (y[..., :, 1:] - y[..., :, :-1]).abs().mean()


def downsample(x: Tensor, factor: int) -> Tensor:
    """``x`` (N×3×H×W) averaged over ``factor``×``factor`` blocks (identity for 1)."""
    return x if factor == 1 else F.avg_pool2d(x, factor, factor)


def check_style_scales(scales: Sequence[int], image_size: int) -> list[int]:
    """Validated downsampling factors of the multi-scale style loss: distinct integers ≥ 1
    that leave at least 16 px of a ``image_size`` training crop."""
    out = []
    for f in scales:
        if isinstance(f, bool) or not isinstance(f, int) or f < 1:
            raise ValueError(f"style scales must be whole downsampling factors ≥ 1 (e.g. 1,2,4), "
                             f"got {f!r}")
        if image_size // f < 16:
            raise ValueError(f"style scale {f} leaves {image_size // f} px of the {image_size} px "
                             "training images; use a smaller factor or a larger image size")
        if f not in out:
            out.append(f)
    if not out:
        raise ValueError("style scales must name at least one factor (1 = full size)")
    return out


class PerceptualLoss(nn.Module):
    """content_weight·‖φ_c(y) − φ_c(x)‖² + style_weight·L_style + tv_weight·TV(y) (Johnson et al.
    2016, eq. 2–5), for one or several styles.

    Multi-scale style loss: L_style = mean over factors f of Σ_l ‖G_l(↓f y) − G_l(↓f s)‖², with
    ↓f a f×f average pooling of the image (f = 1 is the usual loss). The loss network here stops
    at relu3_1 (receptive field ≈ 40 px); at f = 4 the same layers see ≈ 160 px of the image, so
    strokes larger than relu3_1's field are matched while their size in pixels stays the style
    image's (both are downsampled by the same f). ``style_images``: one 1×3×H×W tensor (0–255)
    or a list, one per style; ``forward(..., style=k)`` picks style k's Gram targets.
    """

    def __init__(self, encoder: nn.Module, style_images: Tensor | Sequence[Tensor],
                 style_layers: list[str], content_layer: str, content_weight: float,
                 style_weight: float, tv_weight: float = 0.0,
                 style_scales: Sequence[int] = (1,), relative: bool = False,
                 style_multipliers: Sequence[float] | None = None) -> None:
        super().__init__()
        # relative: every term divided by its target's mean square (content: ‖φ(x)‖², style: each
        # tap's ‖G_l(s)‖²), as ``stylize.optimize`` does. The absolute loss lets relu1_1 — whose
        # Gram entries are ~13× relu3_1's for candy, and which carries mostly colour — dominate,
        # so networks learn the palette and little of the shapes; relative weighs every tap
        # equally and makes the weights dimensionless (the same for every painting and encoder).
        self.relative = relative
        self.encoder = encoder
        self.style_layers = list(style_layers)
        self.content_layer = content_layer
        self.content_weight, self.style_weight, self.tv_weight = content_weight, style_weight, tv_weight
        self.scales = [int(f) for f in style_scales]
        images = [style_images] if isinstance(style_images, Tensor) else list(style_images)
        if not images:
            raise ValueError("no style image given")
        self.num_styles = len(images)
        # per style, a factor on style_weight (calibration: some paintings need more style)
        mult = [1.0] * self.num_styles if style_multipliers is None else [float(m) for m in style_multipliers]
        if len(mult) != self.num_styles:
            raise ValueError(f"{len(mult)} style multiplier(s) for {self.num_styles} style(s)")
        self.register_buffer("style_mult", torch.tensor(mult, dtype=torch.float32))
        with torch.no_grad():
            for j, f in enumerate(self.scales):
                grams: list[list[Tensor]] = [[] for _ in self.style_layers]
                for img in images:
                    if min(img.shape[-2:]) // f < 16:
                        raise ValueError(f"style image of {tuple(img.shape[-2:])} px is too small "
                                         f"for style scale {f}: use a larger style size")
                    feats = encoder(downsample(img, f))  # 1×3×H×W, 0–255
                    for i, name in enumerate(self.style_layers):
                        grams[i].append(gram_matrix(feats[name])[0])
                for i in range(len(self.style_layers)):  # S×C×C targets of (scale j, layer i)
                    table = torch.stack(grams[i])
                    self.register_buffer(self._key(j, i), table)
                    self.register_buffer(self._key(j, i) + "_ms", table.pow(2).mean(dim=(1, 2)))

    @staticmethod
    def _key(scale: int, layer: int) -> str:
        return f"gram{layer}" if scale == 0 else f"gram{layer}_s{scale}"

    def _targets(self, j: int, i: int, style: int | Tensor | None, n: int) -> Tensor:
        table = getattr(self, self._key(j, i))  # S×C×C
        if style is None:
            if self.num_styles != 1:
                raise ValueError(f"the loss holds {self.num_styles} styles: pass style=")
            style = 0
        if isinstance(style, int):
            return table[style].expand(n, -1, -1)
        style = style.to(table.device)
        return table[style.expand(n)] if style.numel() == 1 else table[style]  # N×C×C

    def _multiplier(self, style: int | Tensor | None) -> Tensor:
        """The style weight's factor for the batch: its style's (training batches hold one
        style); a batch mixing styles gets the mean of its images' factors."""
        if style is None:
            return self.style_mult[0]
        if isinstance(style, int):
            return self.style_mult[style]
        st = style.to(self.style_mult.device)
        return self.style_mult[st].mean() if st.numel() > 1 else self.style_mult[st.reshape(())]

    def _style_term(self, g: Tensor, j: int, i: int, style: int | Tensor | None) -> Tensor:
        n = g.shape[0]
        target = self._targets(j, i, style, n)
        if not self.relative:
            return F.mse_loss(g, target)
        scale = getattr(self, self._key(j, i) + "_ms")  # S
        if style is None:
            scale = scale[0].expand(n)
        elif isinstance(style, int):
            scale = scale[style].expand(n)
        else:
            st = style.to(scale.device)
            scale = scale[st.expand(n)] if st.numel() == 1 else scale[st]
        per = (g - target).pow(2).mean(dim=(1, 2)) / scale.clamp_min(1e-20)  # N
        return per.mean()

    def forward(self, y: Tensor, x: Tensor, style: int | Tensor | None = None) -> dict[str, Tensor]:
        """y: stylized batch, x: content batch (N×3×H×W, 0–255), ``style``: the batch's style
        index (or one per image) → weighted loss terms."""
        fy = self.encoder(y)
        with torch.no_grad():  # the content target needs only the layers up to its own
            fx = (self.encoder(x, [self.content_layer]) if isinstance(self.encoder, VGGEncoder)
                  else self.encoder(x))[self.content_layer]
        content = F.mse_loss(fy[self.content_layer].float(), fx.float())
        if self.relative:
            content = content / fx.float().pow(2).mean().clamp_min(1e-20)
        style_loss = y.new_zeros((), dtype=torch.float32)
        for j, f in enumerate(self.scales):
            feats = fy if f == 1 else self.encoder(downsample(y, f))
            style_loss = style_loss + sum(
                self._style_term(gram_matrix(feats[name]), j, i, style)
                for i, name in enumerate(self.style_layers))
        style_loss = style_loss / len(self.scales) * self._multiplier(style)
        out = {"content_loss": self.content_weight * content,
               "style_loss": self.style_weight * style_loss}
        tv = total_variation(y.float()) / (255.0 if self.relative else 1.0)
        out["tv_loss"] = self.tv_weight * tv if self.tv_weight else y.new_zeros(())
        out["loss"] = out["content_loss"] + out["style_loss"] + out["tv_loss"]
        return out



def find_encoder(weights: str | Path | None = None) -> VGGEncoder:
    """The loss network from ``weights``, or from the first file of
    ``weights.encoder_search_path``;
    one-line ``ValueError`` naming where it looked when there is none."""
    import weights as shipped

    if weights:
        return load_vgg_encoder(weights)
    found = shipped.find_encoder_file()
    if found is not None:
        return load_vgg_encoder(found)
    where = ", ".join(str(p) for p in shipped.encoder_search_path())
    raise ValueError(f"no VGG encoder weights found (looked in {where}); pass --vgg-weights PATH "
                     f"or put {shipped.ENCODER_FILE} (the normalised VGG-19 of WCT/AdaIN/"
                     "LinearStyleTransfer) in ~/.cache/normlab/weights/")
