"""Hostile and careless command lines (the hardening issue): every case ends with one `error:` line
and exit code 2 (or, where the work can go on, a clear per-file line and a non-zero exit), never
a traceback, and no file that existed before the command is changed or lost.

`python tests/test_hostile.py` prints the README's "hostile inputs" table from these cases.
"""
from __future__ import annotations

import hashlib
import json
import struct
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

ROOT = Path(__file__).resolve().parents[1]

# (what a user did, arguments with {t} = a scratch folder, exit code, text the error must contain)
CASES = [
    ("output is the input", "stylize run -m {m} -o {t}/a.jpg {t}/a.jpg", 2, "never overwritten"),
    ("output folder is the input folder", "stylize run -m {m} -o {t}/in {t}/in", 2, "input"),
    ("two inputs with the same name", "stylize run -m {m} -o {t}/out {t}/in/x.jpg {t}/in2/x.jpg", 2, "x.jpg"),
    ("one output file for two inputs", "stylize run -m {m} -o {t}/f4.jpg {t}/a.jpg {t}/b.jpg", 2, "folder"),
    ("unknown output extension", "stylize run -m {m} -o {t}/x.xyz {t}/a.jpg", 2, ".xyz"),
    ("a file where the output folder goes", "stylize run -m {m} -o {t}/notafolder {t}/a.jpg {t}/b.jpg", 2, "notafolder"),
    ("output exists, no --overwrite", "stylize run -m {m} -o {t}/b.jpg {t}/a.jpg", 2, "--overwrite"),
    ("missing model file", "stylize run -m {t}/candy.pth -o {t}/o.jpg {t}/a.jpg", 2, "not found"),
    ("junk .pth model", "stylize run -m {t}/junk.pth -o {t}/o.jpg {t}/a.jpg", 2, "not a PyTorch checkpoint"),
    ("classifier given as a style model", "stylize run -m {clf} -o {t}/o.jpg {t}/a.jpg", 2, "classifier (resnet20, bn), not a style model"),
    ("style model given as a classifier", "classify predict {m} {t}/a.jpg", 2, "style model (bin), not a classifier"),
    ("crafted config: 10⁹ residual blocks", "stylize run -m {t}/huge.safetensors -o {t}/o.jpg {t}/a.jpg", 2, "residual blocks"),
    ("a non-image among images", "classify predict {clf} {t}/in {t}/bad.jpg", 2, "1 of 5 files could not be read"),
    ("eval on a missing folder", "classify eval {clf} --data folder:{t}/nope", 2, "does not exist"),
    ("--epochs 0", "stylize train --style-image {t}/a.jpg --content {t}/in --epochs 0 --out {t}/r", 2, "epochs"),
    ("--lr nan", "stylize train --style-image {t}/a.jpg --content {t}/in --lr nan --out {t}/r", 2, "learning rate"),
    ("--style-size 1", "stylize train --style-image {t}/a.jpg --content {t}/in --style-size 1 --out {t}/r", 2, "style size"),
    ("--image-size 3", "classify train --data folder:{t}/in --image-size 3 --out {t}/r", 2, "image size"),
    ("IBN-a arch with another norm", "classify train --data folder:{t}/in --arch resnet18_ibn_a --norm in --out {t}/r", 2, "resnet18_ibn_a"),
    ("--resume with nothing to resume", "classify train --data folder:{t}/in --resume --out {t}/r", 2, "nothing to resume"),
    ("shift jpeg=1000", "classify predict {clf} {t}/a.jpg --shift jpeg=1000", 2, "jpeg shift strength"),
    ("shift hue=nan", "classify predict {clf} {t}/a.jpg --shift hue=nan", 2, "hue shift strength"),
    ("shift gamma=-1", "classify predict {clf} {t}/a.jpg --shift gamma=-1", 2, "gamma shift strength"),
    ("unknown device", "--device tpu norms list", 2, "'tpu' is not one of"),
]
USAGE = {"unknown device"}  # caught by the argument parser: its usage message, not `error:`


def _setup(t: Path) -> dict[str, str]:
    """Scratch files: photos, a folder of two, a junk model, a crafted model, a classifier."""
    import torch

    from engine.io import save_safetensors

    rng = np.random.default_rng(0)

    def photo(p: Path) -> None:
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray((rng.random((24, 32, 3)) * 255).astype(np.uint8)).save(p)

    for p in ("a.jpg", "b.jpg", "in/x.jpg", "in/y.jpg", "in2/x.jpg", "in/c1/z.jpg", "in/c2/w.jpg"):
        photo(t / p)
    (t / "bad.jpg").write_bytes(b"not an image at all")
    (t / "junk.pth").write_bytes(bytes(range(256)))
    (t / "notafolder").write_text("a file, not a folder")
    save_safetensors(t / "huge.safetensors", {"w": torch.zeros(1)},
                     {"kind": "style", "format": 1,
                      "config": {"norm": "in", "base_channels": 32, "num_residual": 10**9}})
    return {"m": "candy_bin", "clf": "cifar10_resnet20_bn"}


def _snapshot(t: Path) -> dict[str, str]:
    return {str(p.relative_to(t)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in t.rglob("*") if p.is_file()}


def run_case(t: Path, names: dict[str, str], args: str):
    import main

    argv = args.format(t=t, **names).split()
    if argv[0] != "--device":
        argv = ["--device", "cpu"] + argv
    before = _snapshot(t)
    res = CliRunner().invoke(main.app, argv)
    after = _snapshot(t)
    lost = [k for k, v in before.items() if after.get(k) != v]
    return res, lost


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    t = tmp_path_factory.mktemp("hostile")
    return t, _setup(t)


@pytest.mark.parametrize("what,args,code,msg", CASES, ids=[c[0] for c in CASES])
def test_hostile_input_is_one_clear_line_and_loses_nothing(scratch, what, args, code, msg, monkeypatch):
    t, names = scratch
    monkeypatch.setenv("NORMLAB_CACHE", str(t.parent / "cache"))
    res, lost = run_case(t, names, args)
    out = res.output
    assert "Traceback" not in out and not isinstance(res.exception, (AssertionError, TypeError)), out
    assert res.exit_code == code, out
    if what in USAGE:
        assert msg in " ".join(out.split()), out
    else:
        errors = [line for line in out.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and msg in errors[0], out
    assert not lost, f"changed or removed: {lost}"


if __name__ == "__main__":  # the README table
    import tempfile

    sys.path.insert(0, str(ROOT))
    with tempfile.TemporaryDirectory() as d:
        t = Path(d)
        names = _setup(t)
        print("| case | exit | message (first line) | traceback | files lost |\n|---|---:|---|---:|---:|")
        for what, args, _, _ in CASES:
            res, lost = run_case(t, names, args)
            usage = " ".join(res.output.split("Error")[-1].replace("│", " ").split())
            err = next((l for l in res.output.splitlines() if l.startswith("error:")),
                       usage.strip("─╮╯╰ ") + " (usage error)")
            err = err.replace(str(t), "…").replace("|", "\\|")
            print(f"| {what} | {res.exit_code} | `{err[:110]}` | "
                  f"{int('Traceback' in res.output)} | {len(lost)} |")
