"""Each training option declared once (issue 32, item 4): the config dataclasses own name, type,
default and help; the CLI's options, ``--config FILE`` and ``--set KEY=VALUE`` and the UI's form
defaults are derived from them; one AMP default (``auto``)."""
from __future__ import annotations

import dataclasses
import importlib
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from typer.testing import CliRunner

import main
from classify.config import TrainConfig as ClassifyConfig
from engine import config as C
from stylize.config import DecoderTrainConfig
from stylize.config import TrainConfig as StyleConfig

ROOT = Path(__file__).resolve().parents[1]

# (command, config class, module whose training function the command calls, its name)
COMMANDS = {
    "classify train": (ClassifyConfig, "classify.train", "train"),
    "stylize train": (StyleConfig, "stylize.train", "train"),
    "stylize train-decoder": (DecoderTrainConfig, "stylize.decoder", "train_decoder"),
}
CASES = [(cmd, f.name) for cmd, (cls, _, _) in COMMANDS.items() for f in C.option_fields(cls)]


def _run(monkeypatch, command: str, *args: str):
    """Invoke ``normlab --device cpu COMMAND ARGS`` with the training function replaced by one
    that records the config it is given; returns (result, config or None)."""
    cls, module, name = COMMANDS[command]
    seen = {}

    def fake(cfg, *a, **k):
        seen["cfg"], seen["explicit"] = cfg, k.get("explicit")
        return Path("model.safetensors")

    monkeypatch.setattr(importlib.import_module(module), name, fake)
    res = CliRunner().invoke(main.app, ["--device", "cpu", *command.split(), *args])
    return res, seen.get("cfg"), seen.get("explicit")


def _other_value(cls: type, f: dataclasses.Field) -> tuple[str, object]:
    """A ``--set`` text for field ``f`` and the value it must become (not the default)."""
    tp = C.field_types(cls)[f.name]
    dflt = C.default(f)
    choices = f.metadata.get(C.CHOICES)
    if choices:
        pick = next(c for c in choices if c != dflt)
        return pick, pick
    if f.name == "amp":
        return "true", True
    if f.name == "style_image":
        return "a.jpg", "a.jpg"
    if typing.get_origin(tp) in (typing.Union, type(int | None)):  # X | None → X
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    origin = typing.get_origin(tp)
    if tp is bool:
        return str(not dflt).lower(), not dflt
    if tp is int:
        return "7", 7 if dflt != 7 else 8
    if tp is float:
        return "0.25", 0.25
    if tp is str:
        return "somewhere", "somewhere"
    if origin is list:
        return "1,4", [1, 4]
    if origin is tuple:
        return "0.3,0.6", (0.3, 0.6)
    if origin is dict:
        return '{"width": 2}', {"width": 2}
    raise AssertionError(f"no test value for {f.name}: {tp}")


# ------------------------------------------------------------------------------ the dataclasses

@pytest.mark.parametrize("command,name", CASES)
def test_every_field_has_help_text(command, name):
    cls = COMMANDS[command][0]
    assert len(C.help_text(C.field(cls, name))) > 5, f"{cls.__name__}.{name} has no help text"


@pytest.mark.parametrize("command,name", CASES)
def test_every_field_is_reachable_with_set(monkeypatch, command, name):
    cls = COMMANDS[command][0]
    text, want = _other_value(cls, C.field(cls, name))
    res, cfg, explicit = _run(monkeypatch, command, "--set", f"{name}={text}")
    assert res.exit_code == 0, res.output
    assert getattr(cfg, name) == want and name in explicit


@pytest.mark.parametrize("command", list(COMMANDS))
def test_cli_defaults_are_the_configs(command):
    """Every generated option's default is the dataclass default (one owner: e.g. classify's
    --out was runs/classify/run in the CLI and runs/classify/resnet20-bn in the config)."""
    import typer.main

    cls = COMMANDS[command][0]
    group = typer.main.get_command(main.app)
    sub, name = command.split()
    cmd = group.commands[sub].commands[name]
    params = {p.name: p for p in cmd.params}
    checked = 0
    for f in C.option_fields(cls):
        p = params.get(f.name)
        if p is None or p.default is None:  # own option (device, style_image) or tri-state/list
            continue
        default = p.default.value if hasattr(p.default, "value") else p.default
        assert default == C.default(f), f"--{f.name}: CLI {default!r}, config {C.default(f)!r}"
        assert C.help_text(f) in (p.help or ""), f.name
        checked += 1
    assert checked >= 10


def test_a_run_with_no_options_gets_the_config_defaults(monkeypatch):
    res, cfg, explicit = _run(monkeypatch, "classify train", "--data", "folder:x")
    assert res.exit_code == 0, res.output
    assert cfg == ClassifyConfig(data="folder:x", device="cpu") and explicit == {"data"}


# ------------------------------------------------------------------------------ --config, --set

FLAGS = {
    "classify train": (["--data", "folder:d", "--arch", "resnet32", "--norm", "bin", "--epochs",
                        "3", "--batch-size", "16", "--lr", "0.05", "--nesterov", "--schedule",
                        "onecycle", "--milestones", "0.4,0.8", "--image-size", "16", "--no-amp",
                        "--out", "r", "--overwrite"],
                       {"data": "folder:d", "arch": "resnet32", "norm": "bin", "epochs": 3,
                        "batch_size": 16, "lr": 0.05, "nesterov": True, "schedule": "onecycle",
                        "milestones": [0.4, 0.8], "image_size": 16, "amp": False, "out": "r",
                        "overwrite": True}),
    "stylize train": (["--style-image", "s.jpg", "--content", "c", "--norm", "bin", "--from",
                       "candy_bin", "--train-all", "--style-scales", "1,2,4", "--steps", "5",
                       "--epochs", "1.5", "--loss", "absolute", "--amp", "--channels-last"],
                      {"style_image": "s.jpg", "content_dir": "c", "norm": "bin",
                       "from_model": "candy_bin", "train_all": True, "style_scales": [1, 2, 4],
                       "steps": 5, "epochs": 1.5, "loss": "absolute", "amp": True,
                       "channels_last": True}),
    "stylize train-decoder": (["--content", "c", "--level", "relu2_1", "--steps", "9",
                               "--batch-size", "2", "--vgg-weights", "v.pth", "--init", "random"],
                              {"content_dir": "c", "level": "relu2_1", "steps": 9,
                               "batch_size": 2, "vgg_weights": "v.pth", "init": "random"}),
}


def _toml(values: dict) -> str:
    def v(x):
        if isinstance(x, bool):
            return str(x).lower()
        if isinstance(x, str):
            return json.dumps(x)
        if isinstance(x, list):
            return "[" + ", ".join(v(i) for i in x) + "]"
        return repr(x)

    return "".join(f"{k} = {v(x)}\n" for k, x in values.items())


@pytest.mark.parametrize("command", list(COMMANDS))
@pytest.mark.parametrize("fmt", ["json", "toml", "saved"])
def test_config_file_round_trip_equals_explicit_flags(monkeypatch, tmp_path, command, fmt):
    flags, values = FLAGS[command]
    res, by_flags, explicit = _run(monkeypatch, command, *flags)
    assert res.exit_code == 0, res.output
    assert set(values) <= explicit
    for k, v in values.items():
        got = getattr(by_flags, k)
        assert (list(got) if isinstance(got, tuple) else got) == v, k
    if fmt == "saved":  # a run's own config.json (its whole recipe) describes it again
        path = tmp_path / "config.json"
        path.write_text(json.dumps(by_flags.to_dict()))
    else:
        path = tmp_path / f"run.{fmt}"
        path.write_text(json.dumps(values) if fmt == "json" else _toml(values))
    res, by_file, _ = _run(monkeypatch, command, "--config", str(path))
    assert res.exit_code == 0, res.output
    assert by_file == by_flags


def test_precedence_defaults_config_set_flags(monkeypatch, tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('data = "folder:a"\nepochs = 5\nlr = 0.2\nbatch-size = 32\n')
    res, cfg, _ = _run(monkeypatch, "classify train", "--config", str(path), "--set", "epochs=6",
                       "--set", "lr=0.3", "--lr", "0.4")
    assert res.exit_code == 0, res.output
    assert (cfg.data, cfg.epochs, cfg.lr, cfg.batch_size, cfg.momentum) == \
        ("folder:a", 6, 0.4, 32, C.default(C.field(ClassifyConfig, "momentum")))


def test_special_options_come_from_config_too(monkeypatch, tmp_path):
    """Options a command parses itself (several style images, the device) also come from a
    config file; the command line still wins."""
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"style_image": ["a.jpg", "b.jpg"], "content_dir": "c",
                                "device": "meta"}))
    res, cfg, _ = _run(monkeypatch, "stylize train", "--config", str(path))
    assert res.exit_code == 0, res.output
    assert cfg.style_image == ["a.jpg", "b.jpg"] and cfg.device == "meta"
    res, cfg, _ = _run(monkeypatch, "stylize train", "--config", str(path), "--style-image",
                       "x.jpg", "--device", "cpu")
    assert cfg.style_image == "x.jpg" and cfg.device == "cpu"


def _one_error(res) -> str:
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "Traceback" not in res.output, res.output
    return errors[0]


@pytest.mark.parametrize("command", list(COMMANDS))
def test_bad_key_is_one_line_listing_the_known_ones(monkeypatch, tmp_path, command):
    cls = COMMANDS[command][0]
    err = _one_error(_run(monkeypatch, command, "--set", "learning_rate=0.1")[0])
    assert "unknown option 'learning_rate'" in err and "known: " in err
    assert all(f.name in err for f in C.option_fields(cls))
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"stepz": 3}))
    err = _one_error(_run(monkeypatch, command, "--config", str(path))[0])
    assert f"--config {path}: unknown option 'stepz'" in err


@pytest.mark.parametrize("args,msg", [
    (["--set", "epochs=many"], "epochs='many' is not a whole number"),
    (["--set", "epochs"], "--set expects KEY=VALUE"),
    (["--set", "nesterov=maybe"], "nesterov='maybe' is not a true/false"),
    (["--set", "schedule=cosine"], "schedule='cosine' is not one of step, onecycle"),
    (["--set", "milestones=0.5,x"], "milestones='0.5,x' is not a comma-separated list"),
    (["--set", "model_kwargs=[1"], "model_kwargs='[1' is not a JSON object"),
    (["--set", "amp=fp8"], "amp='fp8' is not one of auto, true, false"),
    (["--config", "{tmp}/missing.json"], "cannot read it"),
    (["--config", "{tmp}/bad.json"], "not valid JSON"),
    (["--config", "{tmp}/bad.toml"], "not valid TOML"),
    (["--config", "{tmp}/list.json"], "expected a table of key = value"),
    (["--config", "{tmp}/c.ini"], "unknown format .ini"),
])
def test_bad_values_are_one_line(monkeypatch, tmp_path, args, msg):
    (tmp_path / "bad.json").write_text("{not json")
    (tmp_path / "bad.toml").write_text("epochs = = 3")
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "c.ini").write_text("[x]\n")
    args = [a.format(tmp=tmp_path) for a in args]
    res, cfg, _ = _run(monkeypatch, "classify train", "--data", "folder:x", *args)
    assert msg in _one_error(res) and cfg is None


def test_amp_fp8_is_refused_before_training():
    with pytest.raises(ValueError, match="amp must be auto, true or false"):
        ClassifyConfig(data="folder:x", amp="fp8").validate()


# ------------------------------------------------------------------------------ the AMP default

@pytest.mark.parametrize("command", list(COMMANDS))
def test_amp_flags(monkeypatch, command):
    assert _run(monkeypatch, command)[1].amp == "auto"
    assert _run(monkeypatch, command, "--amp")[1].amp is True
    assert _run(monkeypatch, command, "--no-amp")[1].amp is False
    assert _run(monkeypatch, command, "--set", "amp=auto")[1].amp == "auto"
    assert _run(monkeypatch, command, "--set", "amp=false")[1].amp is False


def test_amp_auto_policy(monkeypatch):
    import torch

    import engine.devices as devices

    cpu = torch.device("cpu")
    monkeypatch.setattr(devices, "cpu_native_bf16", lambda: True)
    assert devices.resolve_amp(True, cpu) and not devices.resolve_amp(False, cpu)
    assert not devices.resolve_amp("auto", cpu)  # float32 on a CPU, even with native bf16
    for native in (True, False):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: native)
        assert devices.resolve_amp("auto", torch.device("cuda")) is native
    with pytest.raises(ValueError, match="amp must be auto, true or false"):
        devices.resolve_amp("fp16", cpu)


def test_resuming_an_old_run_with_amp_false_keeps_working(tmp_path, monkeypatch):
    """A run saved when amp was a bool resumes with the new default (amp is a run setting)."""
    from PIL import Image

    from classify.train import train

    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    for c in range(2):
        d = tmp_path / "data" / f"c{c}"
        d.mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (8, 8), (200 * c, 80, 40 + i)).save(d / f"{i}.png")
    out = tmp_path / "r"
    train(ClassifyConfig(data=f"folder:{tmp_path / 'data'}", out=str(out), epochs=1,
                         image_size=8, batch_size=8, device="cpu", amp=False), show_bar=False)
    res = CliRunner().invoke(main.app, [
        "--device", "cpu", "classify", "train", "--data", f"folder:{tmp_path / 'data'}",
        "--image-size", "8", "--batch-size", "8", "--out", str(out), "--resume",
        "--set", "epochs=2", "--override", "epochs"])
    assert res.exit_code == 0, res.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


# ------------------------------------------------------------------------------ the other faces

def test_ui_form_defaults_come_from_the_configs():
    import ui.training as T

    for form, cls in (("style", StyleConfig), ("classify", ClassifyConfig)):
        defaults = T.STYLE_DEFAULTS if form == "style" else T.CLASSIFY_DEFAULTS
        for key, value in defaults.items():
            want = T.CPU_SIZED[form].get(key, C.default(C.field(cls, key)))
            assert value == want, (form, key)
    assert T.CLASSIFY_DEFAULTS["lr"] == C.default(C.field(ClassifyConfig, "lr"))


def test_decoder_levels_match_the_library():
    from stylize.arbitrary import LEVELS
    from stylize.config import DECODER_LEVELS

    assert DECODER_LEVELS == LEVELS


def test_config_modules_and_help_import_no_torch():
    code = ("import sys, main; from typer.testing import CliRunner; r = CliRunner(); "
            "import classify.config, stylize.config, engine.config, cli.config_options; "
            "res = r.invoke(main.app, ['stylize', 'train-decoder', '--help']); "
            "assert res.exit_code == 0 and '--config' in res.output and '--set' in res.output; "
            "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize("tp,text,want", [
    (bool, "yes", True), (bool, "off", False), (int, "1_000", 1000), (float, "1e-3", 1e-3),
    (typing.Optional[int], "none", None), (typing.Optional[float], "2", 2.0),
    (list[int], "[1, 2]", [1, 2]), (tuple[float, ...], "0.5", (0.5,)),
    (bool | str, "auto", "auto"), (bool | str, "true", True),
    (str | list[str], "a.jpg", "a.jpg"), (str | list[str], ["a", "b"], ["a", "b"]),
    (str | list[str], '["a.jpg", "b.jpg"]', ["a.jpg", "b.jpg"]),
])
def test_coercion(tp, text, want):
    assert C._coerce(tp, text) == want and type(C._coerce(tp, text)) is type(want)


def test_reproduce_reads_amp_auto():
    from experiments.reproduce.budgets import precision_line

    assert precision_line({"amp": "auto", "device": "cpu"}) == "Precision: float32."
    assert "natively" in precision_line({"amp": "auto", "device": "cuda:0"})
    line = precision_line({"amp": "auto", "device": "cpu"}, ["float32", ""])
    assert "the recipe asks for float32" in line
    for amp in (True, False, "auto"):  # recipes saved before and after the auto default
        ClassifyConfig.from_recipe({"data": "folder:x", "amp": amp}).validate()
