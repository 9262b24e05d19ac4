"""The training configs of ``stylize``, each option declared once — name, type, default and
help text (field metadata): ``TrainConfig`` (a feed-forward style network, ``stylize.train``) and
``DecoderTrainConfig`` (a decoder inverting the VGG encoder, ``stylize.decoder``). The CLI's
``stylize train`` / ``stylize train-decoder`` options, ``--config`` / ``--set`` and the UI's form
defaults are derived from them (``engine.config``). Torch-free, so that ``--help`` stays fast;
``validate`` loads what it checks against."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.config import CHOICES
from engine.config import option as _opt
from engine.devices import AMP_AUTO, AMP_CHOICES, AMP_HELP, check_amp

# Settings that may change on resume (how and where a run goes, not what it learns).
RUN_SETTINGS = ("out", "device", "amp", "compile", "steps", "epochs", "checkpoint_every",
                "preview_every", "resume", "overwrite", "channels_last")
DECODER_RUN_SETTINGS = ("out", "device", "amp", "compile", "checkpoint_every", "resume",
                        "overwrite", "eval_every")
DECODER_LEVELS = ("relu3_1", "relu2_1", "relu1_1")  # stylize.arbitrary.LEVELS, deepest first
LOSSES = ("relative", "absolute")
CONTENT_SPLITS = ("train", "all")
OUTPUT_CHOICES = ("linear", "residual", "additive")  # the network heads of stylize.model.TransformerNet


class _Dict:
    """``to_dict`` / ``from_dict`` (unknown keys of an old recipe dropped) for the configs."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainConfig(_Dict):
    """Everything a training run depends on; saved in its checkpoints and final model."""

    style_image: str | list[str] = _opt(
        "", "The style image; several (--style-image a.jpg b.jpg ...) train one network for all "
        "(conditional norms; a style is named after its file).")
    content_dir: str = _opt("", "Folder of content photos (searched recursively).")
    norm: str = _opt("in", "Normalization layer after every conv: a name from `norms list`, or "
                     "its conditional variant (cbin, ...); with several styles the conditional "
                     "variant is used (bin → cbin).")
    out: str = _opt("runs/stylize", "Run folder (checkpoint, metrics, previews, model).")
    image_size: int = _opt(256, "Training crop size (px).")
    batch_size: int = _opt(4, "Batch size.")
    steps: int = _opt(2000, "Optimizer steps (ignored with --epochs).")
    epochs: float | None = _opt(None, "Passes over the content folder instead of --steps.")
    lr: float = _opt(1e-3, "Adam learning rate (BIN gates get 10×).")
    content_weight: float | None = _opt(None, "Content loss weight (default: 1 for --loss "
                                        "relative, else per loss network).")
    style_weight: float | None = _opt(None, "Style loss weight (default: 5 for --loss relative, "
                                      "else per loss network).")
    tv_weight: float = _opt(0.0, "Total-variation weight.")
    style_weights: list[float] | None = _opt(
        None, "Per style image, a multiplier of the style weight (one number per "
        "--style-image, in their order, e.g. 1,1.5,1,1): calibrates paintings that need more "
        "or less style than the others (default: 1 for every style).")
    style_size: int | None = _opt(None, "Resize the style image's shorter side to this.")
    seed: int = _opt(42, "Random seed (init and data order).")
    device: str = _opt("auto", "auto, cpu, cuda, mps (default: the global --device).")
    amp: bool | str = _opt(AMP_AUTO, AMP_HELP, **{CHOICES: AMP_CHOICES})
    compile: bool = _opt(False, "torch.compile the network.")
    resume: bool = _opt(False, "Continue the run in --out exactly where it stopped; its recipe "
                        "wins.")
    overwrite: bool = _opt(False, "Replace the run already in --out (without it, a folder "
                           "holding a run is refused).")
    checkpoint_every: int = _opt(200, "Steps between checkpoints.")
    preview_every: int = _opt(0, "Steps between preview images (0: none).")
    vgg_weights: str | None = _opt(
        None, "VGG weights for the loss: a torchvision VGG-16/19 state dict or a normalised "
        "VGG-19 encoder; 'torchvision' downloads VGG-16 once. Default: torchvision's cache.")
    base_channels: int = _opt(32, "Channels of the network's first conv (stylize.model).")
    num_residual: int = _opt(5, "Residual blocks of the network.")
    output: str = _opt(
        "linear", "Network head (stylize.model.StyleConfig.output): linear, the raw conv output "
        "(dark for the first few hundred steps, then the painting's strokes); residual and "
        "additive start as the photo and stay near it: a colour grade with black holes "
        "(residual) or red halos (additive) (reports/style-quality, 'The output head').",
        **{CHOICES: OUTPUT_CHOICES})
    style_scales: list[int] = _opt(
        [1, 2], "Multi-scale style loss: downsampling factors whose Gram matrices are matched "
        "(1 = usual loss; 1,2,4 learns larger strokes; stylize.losses.PerceptualLoss).")
    from_model: str | None = _opt(None, "Add the style(s) to this model (shipped name or file) "
                                  "and fine-tune only its normalization parameters.")
    train_all: bool = _opt(False, "With --from: fine-tune every parameter (the model's other "
                           "styles change too); a style image named like one of the model's "
                           "styles keeps training that style.")
    channels_last: bool = _opt(False, "channels_last memory format on CPU too (always on GPU).")
    content_split: str = _opt(
        "train", "train: leave out the held-out photos of a folder with a content-split.json "
        "beside it (stylize.photos); all: every photo.", **{CHOICES: CONTENT_SPLITS})
    loss: str = _opt(
        "relative", "relative: each term divided by its target's mean square, every style tap "
        "weighed equally (learns shapes, not only the palette); absolute: the raw MSEs of "
        "earlier models.", **{CHOICES: LOSSES})
    content_layer: str | None = _opt(
        None, "Loss-network layer the content loss compares (default: relu3_1 with --loss "
        "relative, what `stylize score` measures; else the loss network's own). relu2_1 holds "
        "faces and small objects in place (Johnson et al. use relu2_2).")

    @property
    def style_images(self) -> list[str]:
        """The style image paths as a list (one per style)."""
        if isinstance(self.style_image, (list, tuple)):
            return [str(p) for p in self.style_image]
        return [str(self.style_image)] if self.style_image else []

    @property
    def style_names(self) -> list[str]:
        """The names of the styles this run trains: the style images' file names without suffix."""
        return [Path(p).stem for p in self.style_images]

    def validate(self) -> None:
        """One-line ``ValueError`` naming the option for a missing input or out-of-range value."""
        import norms
        from engine.checkpoint import check_range

        from .losses import check_style_scales
        from .model import StyleConfig

        if not self.style_images or not all(self.style_images):
            raise ValueError("no style image given (--style-image)")
        names = [n.lower() for n in self.style_names]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"two style images are both named {dup[0]!r}: styles are named after "
                             "their files, rename one")
        if self.train_all and not self.from_model:
            raise ValueError("--train-all fine-tunes a model given with --from; without --from "
                             "every parameter is trained anyway")
        if not self.content_dir:
            raise ValueError("no content folder given (--content)")
        if self.loss not in LOSSES:
            raise ValueError(f"--loss must be relative or absolute, got {self.loss!r}")
        if self.content_split not in CONTENT_SPLITS:
            raise ValueError(f"content split must be 'train' or 'all', got {self.content_split!r}")
        check_amp(self.amp)
        check_range("image size", self.image_size, 16, 4096)
        check_range("batch size", self.batch_size, 1, 4096)
        check_range("steps", self.steps, 1, 10**8)
        if self.epochs is not None:
            check_range("epochs", self.epochs, 1e-6, 1e6, integer=False)
        check_range("learning rate (lr)", self.lr, 1e-8, 10, integer=False)
        for name in ("content_weight", "style_weight"):
            if getattr(self, name) is not None:
                check_range(name.replace("_", " "), getattr(self, name), 0, 1e12, integer=False)
        check_range("tv weight", self.tv_weight, 0, 1e12, integer=False)
        if self.style_weights is not None:
            if len(self.style_weights) != len(self.style_images):
                raise ValueError(f"--style-weights has {len(self.style_weights)} number(s) for "
                                 f"{len(self.style_images)} style image(s): give one per image")
            for w in self.style_weights:
                check_range("style weights", w, 0, 1e6, integer=False)
        if self.style_size is not None:
            check_range("style size", self.style_size, 16, 8192)
        check_range("checkpoint every (steps)", self.checkpoint_every, 0, 10**8)
        check_range("preview every (steps)", self.preview_every, 0, 10**8)
        check_range("seed", self.seed, 0, 2**63 - 1)
        check_style_scales(self.style_scales, self.image_size)
        StyleConfig(self.norm, self.base_channels, self.num_residual, output=self.output).validate()
        if norms.uses_batch_stats(self.norm) and self.batch_size < 2 and not self.from_model:
            raise ValueError(f"norm {self.norm!r} uses batch statistics: use a batch size of 2 or more")


@dataclass
class DecoderTrainConfig(_Dict):
    """Everything a decoder run depends on; saved in its checkpoints and final model."""

    level: str = _opt("relu3_1", "Encoder level to invert: relu3_1, relu2_1 or relu1_1.",
                      **{CHOICES: DECODER_LEVELS})
    content_dir: str = _opt("", "Folder of photos (its fixed train/held-out split is used: "
                            "training on train only).")
    out: str = _opt("runs/decoder", "Run folder (checkpoint, metrics, model).")
    vgg_weights: str | None = _opt(None, "The normalised VGG-19 encoder the decoder inverts "
                                   "(default: searched as for optimize).")
    image_size: int = _opt(128, "Random crop size in px (the decoder is convolutional: crops "
                           "suffice).")
    load_size: int = _opt(288, "Photos are decoded once at this shorter side; crops are drawn "
                          "from them.")
    # 4: the shipped decoders' (weights/manifest.json) and the CLI's default (the dataclass said 8)
    batch_size: int = _opt(4, "Batch size.")
    steps: int = _opt(3000, "Optimizer steps.")
    lr: float = _opt(1e-3, "Adam learning rate (cosine-decayed to 5 % over the run).")
    feature_weight: float = _opt(1.0, "Weight of the feature reconstruction term.")
    seed: int = _opt(0, "Random seed (init, crops, order).")
    device: str = _opt("auto", "auto, cpu, cuda, mps (default: the global --device).")
    amp: bool | str = _opt(AMP_AUTO, AMP_HELP + " About 2× faster on CPUs with native bf16.",
                            **{CHOICES: AMP_CHOICES})
    compile: bool = _opt(False, "torch.compile the decoder.")
    resume: bool = _opt(False, "Continue the run in --out exactly.")
    overwrite: bool = _opt(False, "Replace the run in --out.")
    checkpoint_every: int = _opt(250, "Steps between checkpoints.")
    eval_every: int = _opt(0, "Steps between held-out PSNR evaluations (0: only at the end).")
    init: str = _opt("lstsq", "lstsq: a one-conv decoder (relu1_1) starts from its "
                     "least-squares pixel fit (closed form, seconds), which Adam needs tens of "
                     "thousands of steps to approach; random otherwise.",
                     **{CHOICES: ("lstsq", "random")})

    def validate(self) -> None:
        from engine.checkpoint import check_range

        if self.level not in DECODER_LEVELS:
            raise ValueError(f"unknown level {self.level!r}; choose from "
                             f"{', '.join(DECODER_LEVELS)}")
        if not self.content_dir:
            raise ValueError("no content folder given (--content)")
        check_amp(self.amp)
        check_range("image size", self.image_size, 16, 1024)
        check_range("load size", self.load_size, self.image_size, 4096)
        check_range("batch size", self.batch_size, 1, 1024)
        check_range("steps", self.steps, 1, 10**7)
        check_range("checkpoint every", self.checkpoint_every, 1, 10**7)
        if not (0 < self.lr < 1):
            raise ValueError(f"--lr must be in (0, 1), got {self.lr}")
        if self.feature_weight < 0:
            raise ValueError("--feature-weight must be ≥ 0")
        if self.init not in ("lstsq", "random"):
            raise ValueError(f"--init must be lstsq or random, got {self.init!r}")
