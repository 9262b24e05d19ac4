"""What each ``--budget`` runs. ``smoke``: seconds (tests, CI); ``cpu``: a few CPU-hours with a
fast schedule (one-cycle + label smoothing 0.1, not the papers'); ``full``: the papers'
schedules, for a GPU. Each reproduction states in its report which budget ran and how it differs
from the paper."""
from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

BUDGETS = ("smoke", "cpu", "full")


def shared_root() -> Path:
    """The shared data folder: ``NORMLAB_SHARED``, else ``../shared`` from the working directory
    (the project's convention), else the folder beside the project root."""
    env = os.environ.get("NORMLAB_SHARED")
    if env:
        return Path(env)
    here = Path("../shared")
    return here if here.is_dir() else Path(__file__).resolve().parents[2].parent / "shared"


@dataclass(frozen=True)
class ClassifyBudget:
    """Classifier training for one budget, plus how many test images the probes use."""

    epochs: int
    seeds: tuple[int, ...]
    depths: tuple[int, ...]
    batch_size: int
    lr: float
    schedule: str
    label_smoothing: float
    train_subset: int | None
    test_subset: int | None
    probe_images: int  # images per condition for shift / divergence probes
    image_size: int | None = None
    weight_decay: float = 1e-4
    estimate: str = ""

    def describe(self) -> str:
        sched = ("step schedule (lr 0.1, ÷10 at 50 % and 75 % of the epochs)"
                 if self.schedule == "step" else
                 f"one-cycle schedule (peak lr {self.lr:g}) with label smoothing "
                 f"{self.label_smoothing:g}")
        sub = (f"a seeded {self.train_subset}-image training subset" if self.train_subset
               else "the full training set")
        test = f"{self.test_subset} test images" if self.test_subset else "the full test set"
        return (f"{self.epochs} epoch(s), {sched}, batch {self.batch_size}, weight decay "
                f"{self.weight_decay:g}, SGD momentum 0.9; {sub}, {test}; seeds "
                f"{', '.join(map(str, self.seeds))} (n = {len(self.seeds)})")

    def recipe(self, data: str, device: str, download: bool = False, **kw: Any) -> dict[str, Any]:
        """A ``classify.train.TrainConfig`` recipe dict for this budget."""
        from classify.train import TrainConfig

        cfg = TrainConfig(data=data, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                          weight_decay=self.weight_decay, schedule=self.schedule,
                          label_smoothing=self.label_smoothing, train_subset=self.train_subset,
                          test_subset=self.test_subset, image_size=self.image_size,
                          device=device, download=download, eval_every=1, **kw)
        return cfg.recipe()


# CIFAR-10 classifiers (bin-cifar, ibn-shift, divergence share these runs).
# The paper: BIN (Nam & Kim 2018, Sec. 4.1) trains CIFAR ResNets with SGD, batch 128, lr 0.1 ÷10
# at 50 % / 75 % of training, weight decay 1e-4 — 160 epochs here, as in classify's default.
CIFAR: dict[str, ClassifyBudget] = {
    "smoke": ClassifyBudget(1, (0, 1), (20,), 32, 0.05, "onecycle", 0.1, 256, 200, 48,
                            estimate="seconds"),
    "cpu": ClassifyBudget(15, (0, 1, 2), (20,), 128, 0.1, "onecycle", 0.1, None, None, 10000,
                          estimate="per ResNet-20 run, 15 epochs × 391 steps: ≈ 35 min on 2 CPU "
                                   "threads in float32 (~0.33 s/step); with native-bf16 "
                                   "autocast and --jobs 2 (two runs at once, 1 thread each, "
                                   "measured on a 2-core EPYC VM) 31 min (BN) to 40–51 min "
                                   "(BIN) per run: bin-cifar's 15 runs took 9.2 run-hours, "
                                   "≈ 4.6 h of wall time (≈ 9 h without bf16); ibn-shift adds "
                                   "the 3 IBN-b runs (≈ 1 h) and reuses the rest; divergence "
                                   "reuses them all"),
    "full": ClassifyBudget(160, (0, 1, 2, 3, 4), (20, 56, 110), 128, 0.1, "step", 0.0, None, None,
                           10000, estimate="75 runs of 160 epochs: a GPU (use --jobs to share it)"),
}

# PACS leave-one-domain-out. The IBN-Net / BIN papers do not report PACS; the usual protocol
# (Li et al. 2017) fine-tunes an ImageNet-pretrained ResNet-18. No pretrained weights ship here,
# so every budget trains from scratch — absolute accuracy is far below the literature.
PACS: dict[str, ClassifyBudget] = {
    "smoke": ClassifyBudget(1, (0, 1), (20,), 32, 0.05, "onecycle", 0.1, 128, 64, 0,
                            image_size=32, estimate="seconds"),
    "cpu": ClassifyBudget(10, (0, 1, 2), (20,), 64, 0.1, "onecycle", 0.1, None, None, 0,
                          image_size=64, weight_decay=5e-4,
                          estimate="≈ 20 min per CIFAR ResNet-20 run at 64 px with native-bf16 "
                                   "autocast and --jobs 2 (≈ 100 s per epoch per run, two at "
                                   "once on a 2-core VM, measured on the first runs); 4 "
                                   "domains × 4 models × 3 seeds = 48 runs ≈ 8 h of wall time"),
    "full": ClassifyBudget(100, (0, 1, 2), (18,), 64, 0.1, "step", 0.0, None, None, 0,
                           image_size=128, weight_decay=5e-4,
                           estimate="48 ImageNet-layout ResNet-18 runs at 128 px: a GPU"),
}


@dataclass(frozen=True)
class StyleBudget:
    """Style-transfer training (BIN paper Fig. 3) for one budget."""

    steps: int
    image_size: int
    batch_size: int
    seeds: tuple[int, ...]
    estimate: str = ""

    def describe(self) -> str:
        return (f"{self.steps} steps at {self.image_size} px, batch {self.batch_size}, Adam lr "
                f"1e-3, seeds {', '.join(map(str, self.seeds))} (n = {len(self.seeds)})")


# The BIN paper (Sec. 4.3) follows Johnson et al. 2016: 256 px, batch 4, 2 epochs of MS-COCO
# (80k images, 40k steps). Here the content set is ../shared/data/content (557 photos).
STYLE: dict[str, StyleBudget] = {
    "smoke": StyleBudget(4, 32, 2, (0, 1), "seconds"),
    "cpu": StyleBudget(300, 128, 4, (0, 1),
                       "≈ 1.6 s per step at 128 px on one CPU thread beside another job "
                       "(measured on a 2-core EPYC VM): 8 runs ≈ 70 min"),
    "full": StyleBudget(40000, 256, 4, (0, 1, 2), "12 runs of 40k steps: a GPU"),
}


def vgg_weights(ctx) -> str | None:
    """The style loss network's weights: ``--vgg-weights``, else the shared normalised VGG-19
    (None when a test encoder stands in), with a one-line error when the file is missing."""
    if ctx.encoder is not None:
        return ctx.vgg_weights
    vgg = ctx.vgg_weights or str(shared_root() / "weights" / "vgg19_normalised_relu3_1.pth")
    if not Path(vgg).is_file():
        raise ValueError(f"VGG weights not found at {vgg}; pass --vgg-weights FILE (a "
                         "torchvision VGG-16/19 state dict or a normalised VGG-19 encoder)")
    return vgg


def sweep_amp(device, budget: str) -> bool:
    """Whether a reproduction's classifier runs train under autocast: on CUDA for ``full`` (the
    long schedules), and for ``cpu`` on a CPU where it pays (``engine.devices.autocast_pays``:
    native bf16). ``smoke`` never does."""
    from engine.devices import autocast_pays

    if device.type == "cuda":
        return budget == "full"
    return budget == "cpu" and autocast_pays(device)


def sweep_line(ctx, b: ClassifyBudget, args: str) -> str:
    """The ``normlab reproduce sweep ARGS`` line a report prints for its runs, with budget
    ``b``'s subsets and the device, autocast and jobs its own runs used (autocast does not
    change a run's folder, but it is how the runs trained)."""
    from engine.devices import resolve_device

    dev = "" if ctx.device == "auto" else f" --device {ctx.device}"
    return (f"normlab{dev} reproduce sweep {args}"
            + (f" --train-subset {b.train_subset}" if b.train_subset else "")
            + (f" --test-subset {b.test_subset}" if b.test_subset else "")
            + f" --runs {ctx.runs}"
            + (" --amp" if sweep_amp(resolve_device(ctx.device), ctx.budget) else "")
            + (f" --jobs {ctx.jobs}" if ctx.jobs > 1 else ""))


def precision_line(recipe: dict[str, Any], recorded: Sequence[str] = ()) -> str:
    """The report's line on numeric precision (autocast changes the numbers a little): what
    each run recorded it trained in (``RunResult.precision``; a run resumed on another machine
    can change), else what the recipe asks for."""
    known = [p for p in recorded if p]
    if known:
        counts = Counter(known)
        parts = [f"{p.replace('+', ' then ')} in {n} of {len(recorded)} runs"
                 for p, n in counts.most_common()]
        if len(known) < len(recorded):
            parts.append(f"not recorded in {len(recorded) - len(known)} (trained before runs "
                         f"logged it; the recipe asks for {_asked(recipe)})")
        lowp = any(p != "float32" for p in counts)
        return ("Precision, as the runs recorded it: " + "; ".join(parts)
                + (" (autocast: norm statistics, the loss and the optimizer in float32)."
                   if lowp else "."))
    asked = _asked(recipe)
    if asked == "float32":
        return "Precision: float32."
    dev = str(recipe.get("device", "cpu")).split(":")[0]
    if asked != "autocast":
        return f"Precision: {asked} on {dev}."
    return (f"Precision: {'bf16' if dev == 'cpu' else 'bf16/fp16'} autocast on {dev} (norm "
            "statistics, the loss and the optimizer in float32).")


def _asked(recipe: dict[str, Any]) -> str:
    """What a recipe's ``amp`` asks for: "autocast", "float32", or for ``auto`` (the configs'
    default, ``engine.devices.resolve_amp``) what it means on the recipe's device."""
    amp = recipe.get("amp")
    if isinstance(amp, str):  # "auto": float32 on CPU, bf16 on a GPU that computes it natively
        dev = str(recipe.get("device", "cpu")).split(":")[0]
        return "float32" if dev == "cpu" else "bf16 autocast where the GPU computes bf16 natively"
    return "autocast" if amp else "float32"


def seeds_by_variant(spec: str | None, variants: Sequence[str],
                     default: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """The seeds each variant trains, from ``--seeds``: None → the budget's ``default`` for all;
    ``N`` → seeds 0..N−1 for every variant; ``VARIANT=N,...`` → seeds 0..N−1 for those variants
    and the budget's seeds for the rest (more power where a claim is the point, e.g.
    ``bn=5,bin=5``). Seeds are 0..N−1 so that every smaller n is a subset of a larger one."""
    out = {v: tuple(default) for v in variants}
    if spec is None or not str(spec).strip():
        return out

    def count(text: str, what: str) -> int:
        try:
            n = int(text)
        except ValueError:
            raise ValueError(f"--seeds: {what} must be a whole number of seeds, got "
                             f"{text.strip()!r}") from None
        if not 1 <= n <= 100:
            raise ValueError(f"--seeds: {what} must be 1 to 100 seeds, got {n}")
        return n

    spec = str(spec).strip()
    if "=" not in spec:
        n = count(spec, "N")
        return {v: tuple(range(n)) for v in variants}
    for part in spec.split(","):
        name, _, n = part.partition("=")
        name = name.strip()
        if name not in out:
            raise ValueError(f"--seeds: unknown variant {name!r} here; this reproduction's "
                             f"variants: {', '.join(variants)}")
        out[name] = tuple(range(count(n, name)))
    return out


def seeds_line(seeds: dict[str, tuple[int, ...]], default: Sequence[int]) -> str:
    """The report line on seeds that differ from the budget's (``--seeds``); "" when none do."""
    other = {v: s for v, s in seeds.items() if tuple(s) != tuple(default)}
    if not other:
        return ""
    return ("Seeds (`--seeds`) differ from the budget's for: "
            + ", ".join(f"{v} {', '.join(map(str, s))} (n = {len(s)})" for v, s in other.items())
            + f"; the rest keep {', '.join(map(str, default))}.")


def check_budget(budget: str) -> str:
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    return budget


def cifar_data(spec: str | None) -> str:
    """The CIFAR-10 ``--data`` spec; default ``../shared/data/cifar10`` (ImageFolder train/test),
    with a one-line error when it is missing."""
    if spec:
        return spec
    root = shared_root() / "data" / "cifar10"
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise ValueError(f"CIFAR-10 not found at {root}/{{train,test}}; pass --data "
                         "folder:TRAIN_DIR,TEST_DIR, or --data cifar10:ROOT --download if you "
                         "have a network")
    return f"folder:{root}/train,{root}/test"


def pacs_data(spec: str | None) -> str:
    """The PACS ``--data`` spec (``pacs:ROOT``); default ``../shared/data/pacs``."""
    if spec:
        if not spec.startswith("pacs:"):
            raise ValueError(f"the pacs reproduction needs --data pacs:ROOT, got {spec!r}")
        return spec
    root = shared_root() / "data" / "pacs"
    if not root.is_dir():
        raise ValueError(f"PACS not found at {root} (ROOT/<domain>/<class>/*.jpg); pass --data "
                         "pacs:ROOT")
    return f"pacs:{root}"
