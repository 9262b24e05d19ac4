"""Training-step speed of whole classifiers per norm (``normlab classify bench``), as ratios to BN
measured in the same run, via ``engine.bench.bench_train_step`` (norms interleaved per round)."""
from __future__ import annotations

import torch
from tqdm import tqdm

from norms import check_names
from engine.bench import bench_train_step, check_precisions, step_table

from .registry import create_model

SETUPS = {"resnet20": dict(batch=128, image=32, classes=10),
          "resnet50": dict(batch=32, image=64, classes=1000)}


def bench_steps(device: torch.device, norm_names: list[str], models: list[str], repeats: int = 6,
                resnet50_size: int = 64, precisions: tuple[str, ...] = ("fp32",)) -> str:
    """Markdown table of step times (ms) and ×BN (float32 BN) for each model, norm and precision
    (``fp32``, ``bf16``/``fp16`` autocast) on ``device``."""
    check_names(norm_names)
    check_precisions(tuple(precisions))
    unknown = [m for m in models if m not in SETUPS]
    if unknown:
        raise ValueError(f"bench models are {', '.join(SETUPS)}; got {', '.join(unknown)}")
    devices = [device] if device.type != "cuda" else [torch.device("cpu"), device]
    rows = []
    for d in devices:
        for m in models:
            s = dict(SETUPS[m])
            if m == "resnet50":
                s["image"] = resnet50_size
            with tqdm(total=repeats * len(set(norm_names) | {"bn"}) * len(set(precisions) | {"fp32"}),
                      desc=f"{m} on {d.type}",
                      leave=False) as bar:
                rows += bench_train_step(
                    lambda n, m=m, c=s["classes"]: create_model(m, num_classes=c, norm=n), d,
                    tuple(norm_names), model_name=f"{m} @{s['image']}px", batch=s["batch"],
                    image=s["image"], classes=s["classes"], repeats=repeats,
                    progress=lambda n: (bar.set_postfix_str(n), bar.update()),
                    precisions=tuple(precisions))
    return step_table(rows)
