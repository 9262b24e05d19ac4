"""engine/: checkpoint schema, safe loading, resume rules, AMP policy."""
from __future__ import annotations

import json

import pytest
import torch

from conftest import ROOT
from engine.checkpoint import describe, read_metadata, read_model, save_model
from engine.devices import amp_dtype, grad_scaler
from engine.io import load_torch
from engine.trainer import resume_recipe


class _Evil:
    pass


def test_load_torch_messages_are_one_clear_line(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(bytes(range(200)))
    evil, ok, trunc = tmp_path / "evil.pth", tmp_path / "ok.pth", tmp_path / "trunc.pth"
    torch.save({"a": _Evil()}, evil)
    torch.save({"a": torch.ones(3)}, ok)
    trunc.write_bytes(ok.read_bytes()[:200])
    cases = [(tmp_path / "missing.pth", "not found"), (junk, "is not a PyTorch checkpoint file"),
             (evil, "will not execute them"), (trunc, "truncated or corrupt"),
             (tmp_path, "is a folder")]
    for path, msg in cases:
        with pytest.raises(ValueError, match=msg) as err:
            load_torch(path)
        assert "\n" not in str(err.value) and "weights_only` set to `False`" not in str(err.value)
    assert torch.equal(load_torch(ok)["a"], torch.ones(3))


def test_wrong_kind_says_what_the_file_is(tmp_path):
    p = save_model(tmp_path / "c.safetensors", {"w": torch.zeros(2)}, kind="classifier",
                   config={"arch": "resnet20", "norm": "bin"})
    assert describe(read_metadata(p)) == "classifier (resnet20, bin)"
    with pytest.raises(ValueError, match=r"is a classifier \(resnet20, bin\), not a style model"):
        read_model(p, "style")


def test_config_is_validated_before_any_tensor_is_read(tmp_path, monkeypatch):
    p = save_model(tmp_path / "s.safetensors", {"w": torch.zeros(2)}, kind="style",
                   config={"norm": "in", "num_residual": 10**9})
    import safetensors

    def no_read(*a, **k):
        raise AssertionError("tensors were read before the config was checked")

    monkeypatch.setattr(safetensors, "safe_open", no_read)

    def bounded(cfg):
        if cfg["num_residual"] > 32:
            raise ValueError("number of residual blocks must be an integer from 0 to 32")

    with pytest.raises(ValueError, match="residual blocks"):
        read_model(p, "style", validate=bounded)


def test_legacy_files_read_as_their_kind(tmp_path):
    from engine.io import save_safetensors

    save_safetensors(tmp_path / "a.safetensors", {"w": torch.zeros(1)},
                     {"kind": "stylize", "config": {"norm": "in"}})
    save_safetensors(tmp_path / "b.safetensors", {"w": torch.zeros(1)},
                     {"format": "normlab.classify/1", "config": {"arch": "resnet20"}})
    assert read_metadata(tmp_path / "a.safetensors")["kind"] == "style"
    assert read_metadata(tmp_path / "b.safetensors")["kind"] == "classifier"
    (tmp_path / "c.safetensors").write_bytes(b"\x08" + b"\x00" * 7 + b"{not json")
    with pytest.raises(ValueError, match="is not a safetensors model file"):
        read_metadata(tmp_path / "c.safetensors")


def test_resume_recipe_checkpoint_wins_and_names_the_flag():
    saved = {"lr": 0.1, "epochs": 30, "device": "cpu", "norm": "bin"}
    # unchanged options and run settings pass; a conflicting option is an error naming it
    assert resume_recipe(saved, {"lr": 0.1, "device": "cuda"}, mutable={"device"}) == \
        {**saved, "device": "cuda"}
    with pytest.raises(ValueError, match=r"--lr 0.001 conflicts with the checkpoint's 0.1.*--override lr"):
        resume_recipe(saved, {"lr": 0.001}, mutable=())
    assert resume_recipe(saved, {"lr": 0.001}, mutable=(), override=["lr"])["lr"] == 0.001
    # only explicit options count: a default that differs is not the user's choice
    assert resume_recipe(saved, {"lr": 0.5, "norm": "bin"}, mutable=(), explicit={"norm"})["lr"] == 0.1
    with pytest.raises(ValueError, match="--override: unknown option"):
        resume_recipe(saved, {}, mutable=(), override=["nope"])


def test_amp_policy_is_bf16_on_cpu_without_a_scaler():
    cpu = torch.device("cpu")
    assert amp_dtype(cpu) == torch.bfloat16 and not grad_scaler(cpu, True).is_enabled()


def _two_class_folder(root) -> None:
    """An 8×8 ImageFolder, two classes of 8 images."""
    from PIL import Image

    for c in range(2):
        d = root / f"c{c}"
        d.mkdir(parents=True)
        for i in range(8):
            Image.new("RGB", (8, 8), (200 * c, 80, 40 + i)).save(d / f"{i}.png")


def test_metrics_and_resume_through_the_cli(tmp_path, monkeypatch):
    """`classify train --resume --lr X` names the flag; `--override lr` accepts it."""
    from typer.testing import CliRunner

    import main

    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    _two_class_folder(tmp_path / "data")
    base = ["--device", "cpu", "classify", "train", "--data", f"folder:{tmp_path / 'data'}",
            "--image-size", "8", "--batch-size", "8", "--epochs", "1", "--out", str(tmp_path / "r")]
    r = CliRunner().invoke(main.app, base)
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(main.app, base[:-2] + ["--out", str(tmp_path / "r"), "--resume",
                                                  "--epochs", "2", "--lr", "0.01"])
    assert r.exit_code == 2 and ("--epochs 2 conflicts" in r.output or "--lr 0.01 conflicts" in r.output), r.output
    r = CliRunner().invoke(main.app, base[:-2] + ["--out", str(tmp_path / "r"), "--resume",
                                                  "--epochs", "2", "--override", "epochs"])
    assert r.exit_code == 0, r.output
    rows = [json.loads(l) for l in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


@pytest.mark.skipif(__import__("importlib").util.find_spec("fcntl") is None,
                    reason="folder locks need POSIX fcntl")
def test_one_process_trains_a_run_folder_at_a_time(tmp_path, monkeypatch):
    """A second writer of the same run folder gets one line (exit 2) and changes nothing; the
    lock dies with its holder, so a killed run never blocks its --resume."""
    import signal
    import subprocess
    import sys

    from typer.testing import CliRunner

    import main
    from engine.io import folder_busy, folder_lock

    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    _two_class_folder(tmp_path / "data")
    run = tmp_path / "r"
    argv = ["--device", "cpu", "classify", "train", "--data", f"folder:{tmp_path / 'data'}",
            "--image-size", "8", "--batch-size", "8", "--epochs", "1", "--out", str(run)]
    with folder_lock(run):  # another process is training into run/
        r = CliRunner().invoke(main.app, argv)
        assert r.exit_code == 2 and "is being trained by another process" in r.output, r.output
        assert not (run / "checkpoint.pt").exists() and not (run / "metrics.jsonl").exists()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from engine.io import folder_lock\n"
         f"with folder_lock({str(run)!r}):\n    print('held', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert folder_busy(run)
        with pytest.raises(ValueError, match=f"pid {holder.pid}"):
            with folder_lock(run):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert not folder_busy(run)  # the dead holder's lock went with it
    r = CliRunner().invoke(main.app, argv)
    assert r.exit_code == 0, r.output
    assert (run / "model.safetensors").is_file()


def test_constant_channel_does_not_divide_by_zero():
    from classify.data import channel_stats

    x = torch.zeros(4, 3, 8, 8, dtype=torch.uint8)
    x[:, 0] = torch.randint(0, 255, (4, 8, 8), dtype=torch.uint8)
    mean, std = channel_stats(x)
    assert std[1] == std[2] == pytest.approx(1 / 255) and std[0] > 0.1


def test_load_image_limit_above_pillows_own(tmp_path, monkeypatch):
    """A caller's larger pixel limit (tiled stylization) also lifts Pillow's bomb check for that
    load only; the explicit limit still refuses with one line."""
    from PIL import Image

    from engine.images import load_image

    p = tmp_path / "big.png"
    Image.new("RGB", (50, 50), (10, 20, 30)).save(p)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 2500 px is a "bomb" to Pillow now
    with pytest.raises(ValueError, match="too large|over the limit"):
        load_image(p, max_pixels=2000)
    assert load_image(p, max_pixels=5000).size == (50, 50)
    assert Image.MAX_IMAGE_PIXELS == 1000  # restored
    with pytest.raises(ValueError):
        load_image(p, max_pixels=1000)


def test_max_image_pixels_follows_the_budget():
    from engine.images import MAX_PIXELS
    from stylize.tiling import max_image_pixels

    assert max_image_pixels(2**20, "cpu") == MAX_PIXELS  # tiny budget: the planner explains it
    assert max_image_pixels(64 * 2**30, "cpu") == 64 * 2**30 // 16  # 16 B/px of image buffers


def test_bench_train_step_precisions_are_ratios_to_fp32_bn():
    """`classify bench --precisions fp32,bf16` rows: every norm in each precision, all timed in
    the same rounds, ratio 1.0 only for float32 BN."""
    from engine.bench import bench_train_step
    from norms import create_norm

    def build(n):
        return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, padding=1), create_norm(n, 4),
                                   torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                   torch.nn.Flatten(), torch.nn.Linear(4, 3))

    rows = bench_train_step(build, torch.device("cpu"), ("bin",), batch=4, image=8, classes=3,
                            repeats=2, precisions=("bf16",))
    assert [r.norm for r in rows] == ["bn", "bin", "bn (bf16)", "bin (bf16)"]
    assert rows[0].ratio == 1.0 and all(r.step_ms > 0 and r.ratio > 0 for r in rows)
    with pytest.raises(ValueError, match="unknown precision"):
        bench_train_step(build, torch.device("cpu"), ("bn",), precisions=("fp8",))


# ------------------------------------------------------------------ the loop: fit, hooks, events

class _LineTask:
    """A minimal task in the style a pipeline writes (today's ``Task`` API): fit y = 2x."""

    @staticmethod
    def make(total: int = 6, **attrs):
        from engine.trainer import Task

        class LineTask(Task):
            name = "line"

            def __init__(self, cfg=None):
                torch.manual_seed(0)
                self.model = torch.nn.Linear(1, 1)
                self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.1)
                self.total_steps, self.batch_size, self.cfg = total, 4, cfg
                for k, v in attrs.items():
                    setattr(self, k, v)

            def batch(self, step):
                g = torch.Generator().manual_seed(step)
                x = torch.randn(4, 1, generator=g)
                return x, 2 * x

            def loss(self, model, batch):
                x, y = batch
                loss = torch.nn.functional.mse_loss(model(x), y)
                return loss, {"loss": loss.detach()}

            def progress_info(self, step, window, evaluation, images_per_s):  # older API
                return {"mine": step * 10}

            def save(self, path, result):
                from engine.io import save_safetensors

                save_safetensors(path, self.model.state_dict(), {"steps": result.step})

        return LineTask


def test_a_task_written_against_the_trainer_api_runs_and_resumes(tmp_path):
    from engine.hooks import HookBase, ProgressEvent
    from engine.trainer import Trainer, load_state, read_metrics

    calls = []

    class Spy(HookBase):
        def before_step(self):
            calls.append(("before", self.trainer.step))

        def after_loss(self):
            calls.append(("loss", self.trainer.step))

        def after_step(self):
            calls.append(("after", self.trainer.step))

    task = _LineTask.make()()
    events: list[ProgressEvent] = []
    res = Trainer(task, out=tmp_path / "a", recipe={"x": 1}, device=torch.device("cpu"),
                  checkpoint_every=2, hooks=[Spy()]).run(progress=events.append, show_bar=False)
    assert res.step == 6 and calls[:3] == [("before", 0), ("loss", 0), ("after", 1)]
    assert [e.step for e in events] == list(range(1, 7)) and events[0].extra == {"mine": 10}
    assert set(events[0].metrics) == {"loss"} and events[-1].fraction == 1.0
    assert [r["step"] for r in read_metrics(tmp_path / "a")] == list(range(1, 7))
    # stop after 3 steps, resume: the same weights as the uninterrupted run
    part = _LineTask.make()()
    Trainer(part, out=tmp_path / "b", recipe={"x": 1}, device=torch.device("cpu"),
            checkpoint_every=2).run(should_stop=lambda: len(read_metrics(tmp_path / "b")) >= 3,
                                    show_bar=False)
    again = _LineTask.make()()
    tr = Trainer(again, out=tmp_path / "b", recipe={"x": 1}, device=torch.device("cpu"),
                 checkpoint_every=2)
    tr.run(start=tr.restore(load_state(tmp_path / "b")), show_bar=False)
    assert torch.equal(task.model.weight, again.model.weight)


def test_gradient_clipping_is_an_option(tmp_path):
    from engine.trainer import Trainer

    seen = []

    class Clipped(_LineTask.make(total=1, clip_grad_norm=1e-3)):
        def loss(self, model, batch):
            loss, m = super().loss(model, batch)
            loss.register_hook(lambda g: g * 1e4)  # a huge gradient
            return loss, m

    task = Clipped()
    before = task.model.weight.detach().clone()
    Trainer(task, out=tmp_path, recipe={}, device=torch.device("cpu")).run(show_bar=False)
    seen.append(float((task.model.weight.detach() - before).norm()))
    assert 0 < seen[0] <= 0.1 * 1e-3 + 1e-9  # lr × max norm


def test_fit_refuses_a_run_folder_without_resume_or_overwrite(tmp_path):
    from dataclasses import asdict, dataclass

    from engine.fit import fit

    @dataclass
    class Cfg:
        out: str = str(tmp_path / "r")
        device: str = "cpu"
        amp: bool = False
        compile: bool = False
        resume: bool = False
        overwrite: bool = False

        def to_dict(self):
            return asdict(self)

        @classmethod
        def from_dict(cls, d):
            return cls(**d)

        def validate(self):
            pass

    task_cls = _LineTask.make()
    path = fit(Cfg(), lambda cfg, device: task_cls(cfg), run_settings=("resume", "overwrite"),
               show_bar=False)
    assert path.is_file() and (tmp_path / "r" / "checkpoint.pt").is_file()
    with pytest.raises(ValueError, match="already holds a run .*--resume.*--overwrite"):
        fit(Cfg(), lambda cfg, device: task_cls(cfg), run_settings=(), show_bar=False)
    (tmp_path / "r" / "checkpoint.prev.pt").write_bytes(b"another run's")
    fit(Cfg(overwrite=True), lambda cfg, device: task_cls(cfg), run_settings=(), show_bar=False)
    assert not (tmp_path / "r" / "checkpoint.prev.pt").exists()  # never "the previous good one"


def test_one_metrics_reader_refuses_damage_and_drops_a_cut_last_line(tmp_path):
    from engine.metrics import read_metrics

    p = tmp_path / "metrics.jsonl"
    p.write_bytes(b'{"step": 1, "loss": 2}\n{"step": 2}\n7\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl line 3 is damaged \(a JSON int"):
        read_metrics(p)  # a damaged line before others is never dropped silently
    p.write_bytes(b'{"step": 1, "loss": 2}\n{"step": 2}\n{"step": 3, "lo')
    assert [r["step"] for r in read_metrics(p)] == [1, 2]  # a last line cut by a crash ends it
    p.write_bytes(b'{"step": 1}\n{"step": 2, "x": "\xff"}\n')
    assert read_metrics(tmp_path) == [{"step": 1}]  # a run folder works too; bad UTF-8 last line
    assert read_metrics(tmp_path / "nope") == [] and read_metrics(p, upto=0) == []


def test_checkpoints_carry_a_checksum_and_fall_back(tmp_path, capsys):
    from engine.checkpoint import load_state, save_state

    for step in (1, 2):
        save_state(tmp_path / "checkpoint.pt", {"step": step, "recipe": {}, "optimizer": {},
                                                "model": {"w": torch.ones(300)},
                                                "rng": torch.get_rng_state()})
    assert load_state(tmp_path)["step"] == 2
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    state["model"]["w"][7] = 5.0  # damaged, yet a valid file
    torch.save(state, tmp_path / "checkpoint.pt")
    back = load_state(tmp_path)
    assert back["step"] == 1 and back["source"].endswith("checkpoint.prev.pt")
    assert "checkpoint.pt is damaged" in capsys.readouterr().err
    (tmp_path / "checkpoint.prev.pt").unlink()
    with pytest.raises(ValueError, match="checkpoint.pt is damaged"):
        load_state(tmp_path)
    # intact checksum, wrong contents (a hand-made file): refused by part, the previous one used
    state["model"]["w"][7] = 1.0
    save_state(tmp_path / "checkpoint.pt", dict(state, step=1))
    save_state(tmp_path / "checkpoint.pt", dict(state, step="abc"))
    back = load_state(tmp_path)
    assert back["step"] == 1 and back["source"].endswith("checkpoint.prev.pt")
    assert "its step is 'abc'" in capsys.readouterr().err
