"""``TrainConfig``: every option of a classifier training run, declared once — name, type,
default and help text (field metadata). The CLI's ``classify train`` options, ``--config`` /
``--set`` and the UI's form defaults are derived from it (``engine.config``). Torch-free, so that
``normlab classify train --help`` stays fast."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from engine.config import CHOICES
from engine.config import option as _opt
from engine.devices import AMP_AUTO, AMP_CHOICES, AMP_HELP, check_amp

SCHEDULES = ("step", "onecycle")

# Settings that may change when a run is resumed (how and where it runs, not what it learns).
RUN_SETTINGS = ("out", "device", "amp", "compile", "resume", "overwrite", "threads", "eval_every")


@dataclass
class TrainConfig:
    """Everything a training run needs; saved with the run so ``resume`` can check it."""

    arch: str = _opt("resnet20", "Architecture (see `classify list`).")
    norm: str = _opt("bn", "Normalization layer everywhere (a name from `norms list`; ibn: the "
                     "IBN-a placement with BN elsewhere).")
    data: str = _opt("", "Training data (required): cifar10:ROOT | folder:TRAIN[,TEST] | "
                     "pacs:ROOT")
    out: str = _opt("runs/classify/run", "Output folder.")
    epochs: int = _opt(160, "Epochs.")
    batch_size: int = _opt(128, "Global batch size (split across torchrun processes).")
    lr: float = _opt(0.1, "Peak SGD learning rate (BIN gates get 10×).")
    momentum: float = _opt(0.9, "SGD momentum.")
    nesterov: bool = _opt(False, "Nesterov momentum.")
    weight_decay: float = _opt(1e-4, "Weight decay (not on norm parameters or gates).")
    schedule: str = _opt("step", "step: lr ÷10 at 50% and 75% of the epochs (the papers'); "
                         "onecycle: warm-up then cosine to 0, per step.", **{CHOICES: SCHEDULES})
    milestones: tuple[float, ...] = _opt((0.5, 0.75), "step schedule: the fractions of the epochs "
                                         "at which lr drops ÷10.")
    label_smoothing: float = _opt(0.0, "Label smoothing of the cross-entropy (0.1 with onecycle "
                                  "is the fast recipe).")
    seed: int = _opt(0, "Random seed (init, data order, augmentation).")
    device: str = _opt("auto", "auto, cpu, cuda, mps (default: the global --device).")
    amp: bool | str = _opt(AMP_AUTO, AMP_HELP, **{CHOICES: AMP_CHOICES})
    compile: bool = _opt(False, "torch.compile the model.")
    image_size: int | None = _opt(None, "Input size (default: the arch's, 32 for CIFAR nets).")
    train_subset: int | None = _opt(None, "Train on a seeded random subset of this many images.")
    test_subset: int | None = _opt(None, "Evaluate on a seeded subset.")
    train_domains: str | None = _opt(None, "pacs: comma-separated training domains.")
    test_domains: str | None = _opt(None, "pacs: comma-separated test domains.")
    download: bool = _opt(False, "cifar10: download the dataset if missing.")
    resume: bool = _opt(False, "Continue OUT/checkpoint.pt exactly; its recipe wins.")
    overwrite: bool = _opt(False, "Replace the run already in OUT (without it, a folder holding a "
                           "run is refused).")
    threads: int = _opt(0, "CPU threads (0: torch's default).")
    eval_every: int = _opt(1, "Epochs between test evaluations (0: only at the end).")
    val_split: int = _opt(0, "Hold out this many training images (fixed seed, by class) as the "
                          "set evaluated during training; the test set is then evaluated once, "
                          "after training (0: no hold-out; "
                          "classify.data.DataSplit.with_validation).")
    init: str | None = _opt(None, "Start from this classifier's weights (shipped name or "
                            ".safetensors of the same arch and norm): fine-tuning, or a warm "
                            "restart with a new schedule.")
    model_kwargs: dict[str, Any] = _opt({}, "Extra architecture arguments (JSON object), e.g. "
                                        '{"ibn": "b"}.')

    def validate(self) -> None:
        """One-line ``ValueError`` naming the option for any out-of-range value."""
        from engine.checkpoint import check_range

        from .registry import validate_arch_norm

        if not self.data:
            raise ValueError("no training data given (--data cifar10:ROOT | folder:TRAIN[,TEST] "
                             "| pacs:ROOT)")
        check_range("epochs", self.epochs, 1, 100_000)
        check_range("batch size", self.batch_size, 2, 65_536)
        check_range("learning rate (lr)", self.lr, 1e-8, 100, integer=False)
        check_range("momentum", self.momentum, 0, 1, integer=False)
        check_range("weight decay", self.weight_decay, 0, 1, integer=False)
        check_range("label smoothing", self.label_smoothing, 0, 0.99, integer=False)
        check_range("seed", self.seed, 0, 2**63 - 1)
        check_range("threads", self.threads, 0, 1024)
        check_range("eval every (epochs)", self.eval_every, 0, 100_000)
        check_range("val split", self.val_split, 0, 10**9)
        if self.image_size is not None:
            check_range("image size", self.image_size, 8, 1024)
        for name in ("train_subset", "test_subset"):
            if getattr(self, name) is not None:
                check_range(name.replace("_", " "), getattr(self, name), 2, 10**9)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if not all(isinstance(m, (int, float)) and 0 < m < 1 for m in self.milestones):
            raise ValueError(f"milestones must be fractions of the epochs in (0, 1), got {self.milestones}")
        check_amp(self.amp)
        validate_arch_norm(self.arch, self.norm)

    def recipe(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_recipe(cls, d: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        d = {k: tuple(v) if k == "milestones" else v for k, v in d.items() if k in names}
        return cls(**d)

    to_dict = recipe  # the names engine.fit uses

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        return cls.from_recipe(d)
