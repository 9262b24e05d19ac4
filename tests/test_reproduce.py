"""normlab reproduce: every reproduction end to end at the smoke budget on tiny synthetic data
(reports with the expected sections, mean ± sd tables with n, plots), the sweep runner's
skip/resume, the statistics helper, and the tensor augmentation."""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from experiments.reproduce import Context, reproduce
from experiments.reproduce.stats import student_t_sf2, summarize, welch
from conftest import ROOT
from test_stylize_train import TinyEncoder

SECTIONS = ("## Setup", "## Results", "## Figures", "## Reproduce", "## Wall time")


def _folder(root: Path, classes: int, per: int, size: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    for c in range(classes):
        d = root / f"c{c}"
        d.mkdir(parents=True)
        for i in range(per):
            a = np.zeros((size, size, 3))
            a[..., c % 3] = 60 + 50 * c  # class-dependent colour + noise
            a = np.clip(a + rng.normal(0, 40, a.shape), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(d / f"{i}.png")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 4-class 32 px ImageFolder (train 32 / test 16 images), a 4-domain PACS-like tree, the
    runs folder shared by the CIFAR reproductions (as in real use) and a style-transfer set."""
    root = tmp_path_factory.mktemp("reproduce")
    _folder(root / "cifar" / "train", 4, 8, 32, 0)
    _folder(root / "cifar" / "test", 4, 4, 32, 1)
    for k, dom in enumerate(["art_painting", "cartoon", "photo", "sketch"]):
        _folder(root / "pacs" / dom, 2, 4, 40, 10 + k)
    _folder(root / "content", 1, 4, 40, 20)
    Image.fromarray(np.random.default_rng(3).integers(0, 256, (48, 48, 3), dtype=np.uint8)
                    ).save(root / "style.png")
    return root


@pytest.fixture(autouse=True)
def _cache_and_threads(tiny, monkeypatch):
    monkeypatch.setenv("NORMLAB_CACHE", str(tiny / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is faster, and the CI box is shared
    yield
    torch.set_num_threads(threads)


def _ctx(tiny: Path, name: str, **kw) -> Context:
    data = f"folder:{tiny}/cifar/train,{tiny}/cifar/test"
    return Context(budget="smoke", out=tiny / "reports" / name, runs=kw.pop("runs", tiny / "runs"),
                   data=kw.pop("data", data), device="cpu", command=f"normlab reproduce {name}",
                   **kw)


def _smoke_report(tiny: Path, name: str) -> Path:
    """The smoke report ``name`` (and its runs), written now unless an earlier test of this
    module did: tests that read reports also pass when run alone."""
    readme = tiny / "reports" / name / "README.md"
    if not readme.is_file():
        kw = {"data": f"pacs:{tiny}/pacs"} if name == "pacs" else {}
        reproduce(name, _ctx(tiny, name, **kw))
    return readme


def _check_report(readme: Path, pngs: int) -> tuple[str, dict]:
    md = readme.read_text()
    for s in SECTIONS:
        assert s in md, f"{readme}: no {s}"
    assert "budget: `smoke`" in md and "| n |" in md
    assert " ± " in md  # mean ± sd cells (2 seeds)
    assert "inside the noise" in md or "larger than the noise" in md
    figs = sorted(readme.parent.glob("*.png"))
    assert len(figs) >= pngs
    for f in figs:
        assert f.stat().st_size > 1000 and f"]({f.name})" in md
        with Image.open(f) as im:
            assert im.width > 200
    res = json.loads((readme.parent / "results.json").read_text())
    assert res["budget"] == "smoke" and res["wall_s"] >= 0
    _check_renders_from_results(readme, md, res)
    return md, res


def _check_renders_from_results(readme: Path, md: str, res: dict) -> None:
    """What a reproduction wrote is what ``render`` rebuilds from its results.json alone (the
    writer computes; ``render``, shared by both, formats), and its Findings section is the block
    the READMEs show."""
    from experiments.reproduce import render

    text, payload = render.render_report(res, readme.parent)
    assert text == md
    assert payload["gaps"] == res["gaps"]
    findings = md.split("### Findings\n\n", 1)[1].split("\n\n", 1)[0]
    assert render.results_block(res["name"], res) == findings + "\n"


def test_bin_cifar_smoke_report(tiny):
    readme = reproduce("bin-cifar", _ctx(tiny, "bin-cifar"))
    md, res = _check_report(readme, 2)
    assert "| norm | n | ResNet-20 |" in md
    assert "Precision, as the runs recorded it: float32 in 10 of 10 runs." in md  # smoke: no autocast
    for v in ("bn", "in", "bn_in", "bin", "ibn_a"):
        assert f"| {v} | 2 |" in md
        assert f"| {v} | 20 | 0 | " in md and f"| {v} | 20 | 1 | " in md  # the Every run table
    assert len(res["runs"]) == 10 and {r["seed"] for r in res["runs"]} == {0, 1}
    assert "ResNet-20 | stem mean ρ" in res["gates"] and len(res["gates"]["ResNet-20 | stem mean ρ"]) == 2
    assert (tiny / "reports" / "bin-cifar" / "fig2_gates_resnet20.png").is_file()


def test_ibn_shift_smoke_reuses_runs_and_tables_drops(tiny):
    readme = reproduce("ibn-shift", _ctx(tiny, "ibn-shift"))
    md, res = _check_report(readme, 1)
    assert "rgb_plus=50" in md and "style:candy_bin" in md and "| ibn_b | 2 |" in md
    assert "Precision, as the runs recorded it: float32 in 8 of 8 runs." in md
    reused = [r for r in res["runs"] if r["reused"]]
    assert len(res["runs"]) == 8 and len(reused) >= 6  # bn/ibn_a/bin came from bin-cifar
    d = res["drop"]["bn | contrast=1.5"]
    a = res["accuracy"]
    assert d[0] == pytest.approx(a["bn | clean"][0] - a["bn | contrast=1.5"][0])


def test_divergence_smoke_report(tiny):
    readme = reproduce("divergence", _ctx(tiny, "divergence"))
    md, res = _check_report(readme, 2)
    assert "appearance: clean vs style:candy_bin" in md and "content:" in md
    assert res["layers"][0] == "bn1" and len(res["layers"]) == 10  # stem + 9 blocks
    curves = res["curves"]["appearance: clean vs style:candy_bin | bn"]
    assert len(curves) == 2 and all(v >= 0 for c in curves for v in c)
    # every layer tested against BN, mean and median over channels (one Holm family per pair)
    assert len(res["curves_median"]["appearance: clean vs style:candy_bin | bn"][0]) == 10
    assert "median over channels" in md and "not in this results.json" not in md
    for measure in ("curves", "curves_median"):
        gaps = [g for g in res["gaps"] if g["measure"] == measure]
        assert {g["layer"] for g in gaps} == set(res["layers"]) and len(gaps) == 2 * 10 * 3


def test_pacs_smoke_all_four_domains(tiny):
    readme = reproduce("pacs", _ctx(tiny, "pacs", data=f"pacs:{tiny}/pacs"))
    md, res = _check_report(readme, 1)
    assert "| model | n | art_painting | cartoon | photo | sketch | average |" in md
    assert ("| variant | depth | group | seed | top-1 (%) | training (min) | images/s | "
            "measured on |") in md
    assert md.count("| cpu, 1 thread, alone |") == 32  # every run says where its speed came from
    assert md.count("| ibn_b | 20 | sketch | ") == 2  # every run listed, one line per seed
    assert len(res["runs"]) == 4 * 4 * 2
    assert {r["group"] for r in res["runs"]} == {"art_painting", "cartoon", "photo", "sketch"}
    assert all(list(r["test_acc"]) == [r["group"]] for r in res["runs"])  # held-out only
    assert "### Source-domain training top-1 (%)" in md and "| without sketch |" in md
    assert all(0 <= r["train_acc"] <= 100 for r in res["runs"])


def test_status_shows_the_runs_without_training(tiny):
    """After the smoke reports: every run of bin-cifar / pacs is finished, and --status (CLI)
    trains nothing; a reproduction without a run grid says so in one line."""
    from typer.testing import CliRunner

    import main

    for name in ("bin-cifar", "pacs"):
        _smoke_report(tiny, name)
    before = sorted(p.name for p in (tiny / "runs").iterdir())
    r = CliRunner().invoke(main.app, ["--device", "cpu", "reproduce", "bin-cifar", "--budget",
                                      "smoke", "--data", f"folder:{tiny}/cifar/train,{tiny}/cifar/test",
                                      "--runs", str(tiny / "runs"), "--status"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith("10 runs: 10 finished; 100 % of the epochs done.")
    assert r.output.count("| finished | 1/1 |") == 10
    assert sorted(p.name for p in (tiny / "runs").iterdir()) == before
    from experiments.reproduce import run_status

    pacs = run_status("pacs", _ctx(tiny, "pacs", data=f"pacs:{tiny}/pacs"))
    assert pacs.startswith("32 runs: 32 finished;") and "| group |" in pacs
    r = CliRunner().invoke(main.app, ["reproduce", "style-curves", "--status"])
    assert r.exit_code == 2 and "no run grid" in r.output and len(r.output.strip().splitlines()) == 1


def test_ledger_keeps_finished_runs_when_their_folders_are_gone(tiny, monkeypatch):
    """A grid resumed on a fresh checkout (no runs/): the runs a committed ledger records are
    finished — read back with their numbers, not retrained — and every finished run, including
    one finished before the ledger existed, is recorded in it."""
    import shutil

    from classify.train import TrainConfig
    import experiments.reproduce.sweep as sw

    base = TrainConfig(data=f"folder:{tiny}/cifar/train,{tiny}/cifar/test", epochs=1,
                       batch_size=16, train_subset=16, device="cpu").recipe()
    runs, path = tiny / "ledger-runs", tiny / "ledger" / "runs.json"
    specs = sw.plan(base, ["bn", "bin"], [0], [20], runs)
    first = sw.run_sweep(specs[:1])  # finished before there was a ledger
    res = sw.run_sweep(specs, ledger=sw.Ledger(path))
    assert [r.reused for r in res] == [True, False]
    book = json.loads(path.read_text())["runs"]
    assert sorted(book) == sorted(s.key for s in specs)
    assert book[specs[0].key]["test_acc"] == first[0].test_acc
    shutil.rmtree(runs)  # a fresh clone: the run folders are gone, the ledger is committed
    assert sw.status_table(specs).startswith("2 runs: 2 new;")
    table = sw.status_table(specs, sw.Ledger(path))
    assert table.startswith("2 runs: 2 finished; 100 % of the epochs done."), table
    monkeypatch.setattr(sw, "run_one", lambda *a, **k: pytest.fail("a recorded run was retrained"))
    again = sw.run_sweep(specs, ledger=sw.Ledger(path))
    assert [r.reused for r in again] == [True, True]
    assert [r.test_acc for r in again] == [r.test_acc for r in res]
    assert [r.curve for r in again] == [r.curve for r in res]
    assert not runs.exists()


@pytest.mark.parametrize("text,why", [("{not json", "not valid JSON"),
                                      ('{"results": []}', "no 'runs' object"),
                                      ('{"runs": {"KEY": {"label": "bn"}}}', "lacks")])
def test_a_bad_ledger_is_one_clear_error(tmp_path, text, why):
    import experiments.reproduce.sweep as sw

    specs = sw.plan({"data": "x", "epochs": 1}, ["bn"], [0], [20], tmp_path / "runs")
    path = tmp_path / "ledger.json"
    path.write_text(text.replace("KEY", specs[0].key))
    with pytest.raises(ValueError, match=why):
        sw.run_sweep(specs, ledger=sw.Ledger(path))
    assert path.read_text() == text.replace("KEY", specs[0].key)  # left as it was


def test_pacs_report_from_a_ledger_and_others_refuse_one(tiny, monkeypatch):
    """pacs --ledger records its runs and rebuilds the same report from the ledger alone; a
    reproduction without a run grid refuses --ledger in one line (CLI exit code 2, as for any
    bad input)."""
    from typer.testing import CliRunner

    import experiments.reproduce.sweep as sw
    import main

    _smoke_report(tiny, "pacs")
    path = tiny / "pacs-ledger.json"
    reproduce("pacs", _ctx(tiny, "pacs-l1", data=f"pacs:{tiny}/pacs", ledger=path))
    assert len(json.loads(path.read_text())["runs"]) == 32
    monkeypatch.setattr(sw, "run_one", lambda *a, **k: pytest.fail("a recorded run was retrained"))
    readme = reproduce("pacs", _ctx(tiny, "pacs-l2", data=f"pacs:{tiny}/pacs", ledger=path,
                                   runs=tiny / "no-runs-here"))
    md = readme.read_text()
    assert "pacs-ledger.json` (one result per run" in md
    table = md.split("### Held-out-domain top-1 (%)")[1].split("###")[0]
    first = (tiny / "reports" / "pacs" / "README.md").read_text()
    assert table == first.split("### Held-out-domain top-1 (%)")[1].split("###")[0]
    r = CliRunner().invoke(main.app, ["reproduce", "style-curves", "--ledger", str(path)])
    assert r.exit_code == 2 and "--ledger works for bin-cifar, ibn-shift, pacs, divergence" in r.output
    assert len(r.output.strip().splitlines()) == 1
    r = CliRunner().invoke(main.app, ["reproduce", "strokes", "--seeds", "5"])
    assert r.exit_code == 2 and "--seeds works for bin-cifar" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_cifar_reports_from_a_ledger_keep_what_they_measured(tiny, monkeypatch):
    """bin-cifar, ibn-shift and divergence with --ledger record each run's result and what the
    report measured on its model (ρ by stage, shifted top-1, divergence by layer); with the run
    folders gone they re-render the same tables from the ledger alone, and a measure the ledger
    lacks for a run whose model is gone is one clear error."""
    import shutil

    import experiments.reproduce.sweep as sw
    from experiments.reproduce import ibn_shift

    runs, path = tiny / "cifar-ledger-runs", tiny / "cifar-ledger.json"
    first = {n: reproduce(n, _ctx(tiny, f"{n}-l1", runs=runs, ledger=path)).read_text()
             for n in ("bin-cifar", "ibn-shift", "divergence")}
    led = json.loads(path.read_text())["runs"]
    assert len(led) == 12  # 5 + ibn_b variants × 2 seeds
    bins = [r for r in led.values() if r["label"] == "bin"]
    assert all("hist" in r["measures"]["gates"]["stem"] for r in bins)
    assert all(any(k.startswith("shift|") for k in r["measures"]) for r in led.values()
               if r["label"] in ("bn", "ibn_a", "ibn_b", "bin"))
    shutil.rmtree(runs)  # a fresh clone: the run folders are gone, the ledger is committed
    monkeypatch.setattr(sw, "run_one", lambda *a, **k: pytest.fail("a recorded run was retrained"))

    def section(md: str, head: str) -> str:
        return md.split(head)[1].split("\n### ")[0]

    for n, head in (("bin-cifar", "### Table 1"), ("bin-cifar", "### Fig. 2 statistics"),
                    ("ibn-shift", "### Drop (clean"), ("divergence", "### D(μ), median")):
        again = reproduce(n, _ctx(tiny, f"{n}-l2", runs=runs, ledger=path)).read_text()
        assert section(again, head) == section(first[n], head), (n, head)
    assert (tiny / "reports" / "bin-cifar-l2" / "fig2_gates_resnet20.png").is_file()
    # a measure never made while the models existed (another style shift) needs the models:
    # --status says those runs are to train, and the report trains them again
    from experiments.reproduce import run_status

    st = run_status("ibn-shift", _ctx(tiny, "x", runs=runs, ledger=path, style_model="four_styles_bin"))
    assert st.startswith("8 runs: 8 new")
    assert run_status("ibn-shift", _ctx(tiny, "x", runs=runs, ledger=path)).startswith("8 runs: 8 finished")
    trained = []

    def stop(spec, *a, **k):
        trained.append(spec.label)
        raise KeyboardInterrupt

    monkeypatch.setattr(sw, "run_one", stop)
    with pytest.raises(KeyboardInterrupt):
        reproduce("ibn-shift", _ctx(tiny, "ibn-shift-l3", runs=runs, ledger=path,
                                    style_model="four_styles_bin"))
    assert trained == ["bn"]
    # the direct API, asked to measure runs without models, says which and why
    specs = ibn_shift.grid(_ctx(tiny, "x", runs=runs))
    recorded = [sw.Ledger(path).get(s) for s in specs]
    with pytest.raises(ValueError, match=r"lack the measure 'm' and their models are gone.*remove its entry"):
        sw.fill_measures(specs, recorded, "m", lambda rs: [0] * len(rs), sw.Ledger(path))


def test_more_seeds_where_the_claim_is_the_point(tiny):
    """--seeds bn=3 trains one more BN seed and keeps the others at the budget's two; the report
    says so and its tables show n per cell. Bad specs are one line."""
    from experiments.reproduce.budgets import seeds_by_variant

    v = ("bn", "bin", "in")
    assert seeds_by_variant(None, v, (0, 1)) == {"bn": (0, 1), "bin": (0, 1), "in": (0, 1)}
    assert seeds_by_variant("3", v, (0, 1))["in"] == (0, 1, 2)
    assert seeds_by_variant("bn=5, bin=4", v, (0, 1)) == {"bn": tuple(range(5)),
                                                          "bin": tuple(range(4)), "in": (0, 1)}
    for bad, why in (("x", "whole number"), ("gn=3", "unknown variant 'gn'"), ("bn=0", "1 to 100"),
                     ("bn=", "whole number")):
        with pytest.raises(ValueError, match=why):
            seeds_by_variant(bad, v, (0, 1))
    readme = reproduce("bin-cifar", _ctx(tiny, "bin-cifar-seeds", seeds="bn=3"))
    md = readme.read_text()
    assert "| bn | 3 |" in md and "| bin | 2 |" in md
    assert "Seeds (`--seeds`) differ from the budget's for: bn 0, 1, 2 (n = 3)" in md
    assert "--seeds 0,1,2 " in md  # the sweep line trains the largest n


@pytest.mark.parametrize("name,n", [("bin-cifar", 10), ("pacs", 8)])
def test_reports_sweep_line_names_the_same_runs(tiny, name, n):
    """The report's "runs alone" `reproduce sweep` line, run as printed with --status, finds
    the report's own runs finished: same hashes, so it would retrain nothing."""
    import shlex

    from typer.testing import CliRunner

    import main

    md = _smoke_report(tiny, name).read_text()
    line = next(ln for ln in md.splitlines() if " reproduce sweep " in ln)
    args = shlex.split(line)
    assert args[0] == "normlab" and "--device" in args  # the report ran with --device cpu
    r = CliRunner().invoke(main.app, args[1:] + ["--status"])
    assert r.exit_code == 0, r.output
    assert r.output.startswith(f"{n} runs: {n} finished;"), r.output


def test_style_curves_smoke_report(tiny):
    ctx = _ctx(tiny, "style-curves", data=str(tiny / "content"),
               style_image=str(tiny / "style.png"), encoder=TinyEncoder())
    md, res = _check_report(reproduce("style-curves", ctx), 3)
    assert "| norm | n | content loss | style loss | total |" in md
    assert "](fig4_norms.png)" in md  # Fig. 4/5: the shipped sample photos through each norm
    assert "Fig. 6 statistics" in md and "residual mean ρ" in md
    assert len(res["runs"]) == 8 and all(r["steps"] == 4 for r in res["runs"])
    # the norms share seeds, photos and batch order: gaps to IN are paired by seed
    assert {g["test"] for g in res["gaps"]} == {"paired"} and "paired t = " in md


def test_sweep_skips_finished_and_resumes_partial(tiny, monkeypatch):
    from classify.train import TrainConfig, train
    import experiments.reproduce.sweep as sw

    base = TrainConfig(data=f"folder:{tiny}/cifar/train,{tiny}/cifar/test", epochs=2,
                       batch_size=16, train_subset=16, device="cpu").recipe()
    specs = sw.plan(base, ["bn"], [0, 1], [20], tiny / "sweep")
    assert [sw.status(s) for s in specs] == ["new", "new"]
    first = sw.run_sweep(specs[:1])
    assert sw.status(specs[0]) == "finished" and not first[0].reused
    assert first[0].ran_as == "cpu, 1 thread, alone"  # what its images/s was measured on
    last = json.loads((Path(specs[0].recipe["out"]) / "metrics.jsonl").read_text().splitlines()[-1])
    assert first[0].train_acc == pytest.approx(last["train_acc"])
    done = Path(specs[0].recipe["out"]) / "result.json"  # as written before train_acc was kept
    done.write_text(json.dumps({k: v for k, v in json.loads(done.read_text()).items()
                                if k != "train_acc"}))
    # interrupt run 2 after its first epoch (1 step per epoch): a checkpoint, no result
    steps = []
    train(TrainConfig.from_recipe(specs[1].recipe), progress=steps.append,
          should_stop=lambda: len(steps) >= 1)
    assert sw.status(specs[1]) == "partial"
    table = sw.status_table(specs)
    assert table.startswith("2 runs: 1 finished, 1 partial; 75 % of the epochs done.")
    assert "| partial | 1/2 |" in table and "| finished | 2/2 |" in table
    metrics = Path(specs[1].recipe["out"]) / "metrics.jsonl"
    assert len(metrics.read_text().splitlines()) == 1  # stopped after epoch 1 of 2
    # pretend the first session trained for 1000 s: the run's time adds up over sessions
    row = json.loads(metrics.read_text())
    assert row["train_s"] >= 0
    assert row["precision"] == "float32"
    # ... in bf16 on another machine: the result says the run changed precision
    metrics.write_text(json.dumps(dict(row, train_s=1000.0, precision="bfloat16")) + "\n")
    calls = []
    real = sw.run_one
    monkeypatch.setattr(sw, "run_one", lambda s, show_bar=True: (calls.append(s.key), real(s))[1])
    again = sw.run_sweep(specs)
    assert [r.reused for r in again] == [True, False]  # the finished run was only read back
    assert again[0].test_acc == first[0].test_acc
    assert again[0].train_acc == first[0].train_acc  # read back from its metrics log
    epochs = [r["epoch"] for r in again[1].curve]
    assert epochs[-1] == 2 and len(epochs) == len(set(epochs))  # resumed, not restarted twice
    assert sw.status(specs[1]) == "finished"
    rows = [json.loads(l) for l in metrics.read_text().splitlines()]
    assert rows[-1]["train_s"] >= 1000.0 and again[1].seconds >= 1000.0
    assert again[1].precision == "bfloat16+float32" and again[0].precision == "float32"
    md = sw.summary_table(again)
    assert "| bn | 2 |" in md and " ± " in md


def test_sweep_jobs_train_in_worker_processes(tiny):
    """--jobs 2: two spawned workers train the runs, each on its share of the CPU threads, and
    every result says so (its images/s was measured beside another run)."""
    from classify.train import TrainConfig
    import experiments.reproduce.sweep as sw

    base = TrainConfig(data=f"folder:{tiny}/cifar/train,{tiny}/cifar/test", epochs=1,
                       batch_size=16, train_subset=16, device="cpu").recipe()
    specs = sw.plan(base, ["bn", "bin"], [0], [20], tiny / "sweep-jobs")
    res = sw.run_sweep(specs, jobs=2)
    assert [r.label for r in res] == ["bn", "bin"] and all(sw.status(s) == "finished" for s in specs)
    n = max(1, (os.cpu_count() or 1) // 2)
    want = f"cpu, {n} thread{'s' if n != 1 else ''}, up to 2 runs at a time"
    assert [r.ran_as for r in res] == [want, want]
    assert json.loads((Path(specs[0].recipe["out"]) / "result.json").read_text())["ran_as"] == want


@pytest.mark.skipif(os.name != "posix", reason="folder locks are POSIX flock")
def test_status_marks_a_locked_run_training_even_in_its_first_epoch(tmp_path):
    """A run in its first epoch has no checkpoint yet: --status says "training now", not "new"."""
    import experiments.reproduce.sweep as sw
    from engine.io import folder_lock

    specs = sw.plan({"data": "x", "epochs": 3}, ["bn", "bin"], [0], [20], tmp_path)
    with folder_lock(specs[0].recipe["out"]):
        table = sw.status_table(specs)
    assert table.startswith("2 runs: 1 training now, 1 new;"), table
    assert "| bn | 20 | 0 | training now | 0/3 |" in table
    assert sw.status_table(specs).startswith("2 runs: 2 new;")  # lock released: not training


def test_reports_show_project_paths_relative(tmp_path):
    """Committed reports carry no machine's absolute paths."""
    import re

    from experiments.reproduce.report import shown_path

    assert shown_path(ROOT / "weights" / "style_candy_bin.safetensors") == \
        "weights/style_candy_bin.safetensors"
    assert shown_path(tmp_path / "x.pt") == str(tmp_path / "x.pt")  # outside: as given
    absolute = re.compile(r"(?<![\w.~])/(?:work|home|root|tmp|Users|mnt)/")
    for readme in (ROOT / "reports").glob("*/README.md"):
        assert not absolute.search(readme.read_text(encoding="utf-8")), readme


def _alive(pid: int) -> bool:
    """Running (an exited process that nobody reaped yet is a zombie: not alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    status = Path(f"/proc/{pid}/status")
    try:
        return not any(line.startswith("State:") and "Z" in line.split()[1]
                       for line in status.read_text().splitlines())
    except OSError:  # no /proc (macOS): os.kill's answer; else the process just went away
        return not Path("/proc").is_dir()


@pytest.mark.skipif(os.name != "posix", reason="orphan detection uses POSIX parent ids")
def test_sweep_workers_end_when_the_sweep_process_is_killed():
    """A killed sweep leaves no worker training on (it would race the next sweep's resume)."""
    import signal
    import subprocess
    import sys

    script = (
        "import multiprocessing as mp, os, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from experiments.reproduce.sweep import _exit_with_parent\n"
        "if __name__ == '__main__':\n"
        "    ex = ProcessPoolExecutor(1, mp_context=mp.get_context('spawn'), initializer=_exit_with_parent)\n"
        "    print(ex.submit(os.getpid).result(), flush=True)\n"
        "    ex.submit(time.sleep, 120)\n"
        "    time.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE,
                              text=True)
    worker = int(parent.stdout.readline())
    os.kill(worker, 0)  # alive, and busy with the 120 s task
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30  # the watch polls every 2 s
    while time.monotonic() < deadline:
        if not _alive(worker):
            break
        time.sleep(0.2)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the sweep worker outlived its parent by 30 s")


def test_stats_mean_sd_and_noise_verdict():
    s = summarize([1.0, 2.0, 3.0, 4.0])
    assert (s.n, s.mean) == (4, 2.5) and s.sd == pytest.approx(math.sqrt(5 / 3))
    assert s.fmt() == "2.50 ± 1.29"
    assert student_t_sf2(2.0, 10) == pytest.approx(0.07339, abs=1e-4)  # t-table value
    assert student_t_sf2(1.0, 1.0) == pytest.approx(0.5)  # Cauchy: P(|T| ≥ 1) = 1/2
    noisy = welch([90.1, 90.5, 90.3], [90.2, 90.6, 90.0], "bin", "bn")
    assert noisy.in_noise and "inside the noise" in noisy.sentence()
    clear = welch([92.1, 92.5, 92.3], [90.2, 90.6, 90.0], "bin", "bn")
    assert not clear.in_noise and clear.p < 0.01 and clear.diff == pytest.approx(2.0333, abs=1e-3)
    single = welch([91.0], [90.0, 90.4], "a", "b")  # n = 1: no variance, no verdict
    assert math.isnan(single.p) and single.in_noise is None and single.test == "none"
    assert "n too small for a test" in single.sentence()
    assert "noise" not in single.sentence()


def test_verdict_line_reads_the_tests_it_is_given():
    """reproduced / partially / contradicted / direction only / not reproduced / not comparable,
    from the signs and Holm verdicts of the gaps (welch with clear or overlapping samples)."""
    from experiments.reproduce.report import verdict_line

    hi, lo = [10.0, 10.1, 9.9, 10.05], [5.0, 5.1, 4.9, 5.05]
    mid = [7.0, 12.0, 3.0, 8.0]
    up, down, noisy_up = welch(hi, lo, "a", "b"), welch(lo, hi, "a", "b"), welch(mid, [6.0, 7.0, 5.0, 6.5], "a", "b")
    noisy_down = welch([6.0, 7.0, 5.0, 6.5], mid, "a", "b")
    none = welch([1.0], [2.0], "a", "b")
    word = lambda checks, **kw: verdict_line("claim", checks, "why", **kw).split("**")[1]
    assert word([(up, 1), (down, -1)]) == "Verdict: reproduced."
    assert word([(up, 1), (noisy_up, 1)]) == "Verdict: partially reproduced."
    assert word([(up, 1), (up, -1)]) == "Verdict: partially reproduced, partly contradicted."
    assert word([(up, -1), (noisy_up, 1)]) == "Verdict: contradicted."
    assert word([(noisy_up, 1), (noisy_down, -1)]) == ("Verdict: in the claim's direction, inside "
                                                       "the noise.")
    assert word([(noisy_up, 1), (noisy_down, 1)]) == "Verdict: not reproduced (inside the noise)."
    assert word([(none, 1)]) == "Verdict: not comparable (n too small for a test)."
    assert word([(up, 1)], comparable="other data") == "Verdict: not comparable (other data)."
    line = verdict_line("claim", [(up, 1), (noisy_up, 1), (up, -1)], "Scale: small.")
    assert "1 of 3 comparisons in the claim's direction and larger than the noise, 1 in its " \
           "direction inside the noise, 1 against it larger than the noise. Scale: small." in line


def test_stats_paired_holm_and_p_format():
    from experiments.reproduce.stats import fmt_p, holm, holm_adjust, paired

    # seeds move both settings alike (seed effects ±1), the setting adds a steady +0.1:
    # Welch sees mostly seed spread, the paired test sees the steady gap
    base = [90.0, 91.0, 89.0, 90.5]
    other = [b + 0.1 + e for b, e in zip(base, [0.01, -0.01, 0.02, -0.02])]
    w, pr = welch(other, base, "x", "bn"), paired(other, base, "x", "bn")
    assert w.in_noise and not pr.in_noise and pr.test == "paired" and pr.df == 3
    assert pr.diff == pytest.approx(0.1) and "paired t" in pr.sentence()
    assert paired([1.0], [2.0]).test == "none"  # one pair: no test
    with pytest.raises(ValueError, match="equal lengths"):
        paired([1.0, 2.0], [1.0])
    # Holm (1979): sorted p × (m − rank), running max, capped at 1; nan (no test) not counted
    adj = holm_adjust([0.01, 0.04, 0.03, float("nan"), 0.5])
    assert adj[:3] == pytest.approx([0.04, 0.09, 0.09]) and math.isnan(adj[3]) and adj[4] == 0.5
    # a raw p < 0.05 that does not survive the family: the verdict follows the adjusted p
    gaps = holm([welch([91.0, 91.3, 90.7], [90.2, 90.6, 90.0], "a", "bn"),  # p = 0.041
                 welch([90.8, 91.3, 90.9], [90.2, 90.6, 90.0], "b", "bn"),  # p = 0.036
                 welch([91.0], [90.0, 90.4], "c", "bn")])  # no test: not in the family
    assert gaps[1].p < 0.05 <= gaps[1].p_adj and gaps[1].in_noise and gaps[1].family == 2
    assert gaps[1].p_adj == pytest.approx(2 * gaps[1].p) and gaps[0].in_noise
    assert gaps[2].in_noise is None and math.isnan(gaps[2].p_adj)
    assert "Holm-adjusted" in gaps[1].sentence() and "over 2 tests" in gaps[1].sentence()
    # the README once said "p ≤ 0.001" where p was 0.0011–0.0014: two significant digits
    assert [fmt_p(p) for p in (0.0011, 0.00099, 0.041, 0.3, 1.0)] == \
        ["p = 0.0011", "p < 0.001", "p = 0.041", "p = 0.30", "p = 1.0"]


def test_committed_reports_and_readmes_agree_with_their_results():
    """Every committed report README, and every results section of README.md, reports/README.md
    and docs/*.md, is what its results.json renders to: a number edited by hand, or a results
    file changed without re-rendering, fails here (fix: python -m experiments.reproduce.render)."""
    from experiments.reproduce import render

    stale = []
    for folder in sorted(p.parent for p in (ROOT / "reports").glob("*/results.json")):
        text, _ = render.render_report(render.load(folder), folder)
        if (folder / "README.md").read_text(encoding="utf-8") != text:
            stale.append(str(folder / "README.md"))
    texts = render.result_texts(ROOT)
    assert ROOT / "README.md" in texts and ROOT / "reports" / "README.md" in texts
    blocks = 0
    for f in texts:
        old = f.read_text(encoding="utf-8")
        blocks += len(render.MARKER.findall(old))
        if render.update_markers(old, ROOT / "reports") != old:
            stale.append(str(f))
    assert not stale, f"out of date (run python -m experiments.reproduce.render): {stale}"
    assert blocks >= 14  # README + reports/README: every report at least twice
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "<!-- results:bin-cifar -->\n- **Verdict: " in readme  # each block opens with it
    assert "\n- CIFAR-10 ResNet-20, n = " in readme


def test_results_sections_catch_an_edited_number(tmp_path):
    from experiments.reproduce import render

    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    m = render.MARKER.search(readme)
    body = m.group(4)
    edited = readme.replace(body, body.replace("8", "9", 1), 1)
    assert edited != readme and render.update_markers(edited, ROOT / "reports") == readme


def test_a_report_renders_from_results_json_alone(tmp_path):
    """No runs, no models, no figures: results.json is enough to rebuild the README."""
    import shutil

    from experiments.reproduce import render

    for name in ("divergence", "style-curves"):
        src = ROOT / "reports" / name
        dst = tmp_path / name
        dst.mkdir()
        shutil.copy(src / "results.json", dst / "results.json")
        assert render.rerender(dst).read_text(encoding="utf-8") == \
            (src / "README.md").read_text(encoding="utf-8")
        assert json.loads((dst / "results.json").read_text()) == \
            json.loads((src / "results.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "results.json").write_text(json.dumps({"name": "bin-cifar", "budget": "cpu"}))
    with pytest.raises(ValueError, match="no 'report' entry"):
        render.rerender(bad)
    with pytest.raises(ValueError, match="not found"):
        render.rerender(tmp_path / "nowhere")


def test_augment_matches_per_image_loop():
    from classify.data import augment

    def loop(x, g, pad):  # the previous per-image implementation
        n, _, h, w = x.shape
        flips = torch.rand(n, generator=g) < 0.5
        ox = torch.randint(0, 2 * pad + 1, (n,), generator=g)
        oy = torch.randint(0, 2 * pad + 1, (n,), generator=g)
        xp = F.pad(x, (pad, pad, pad, pad))
        out = torch.empty_like(x)
        for i in range(n):
            crop = xp[i, :, oy[i]:oy[i] + h, ox[i]:ox[i] + w]
            out[i] = crop.flip(-1) if flips[i] else crop
        return out

    x = torch.randint(0, 256, (9, 3, 12, 10), dtype=torch.uint8)
    for seed in range(4):
        a = augment(x, torch.Generator().manual_seed(seed), 2)
        assert torch.equal(a, loop(x, torch.Generator().manual_seed(seed), 2))
    assert not torch.equal(augment(x, torch.Generator().manual_seed(0), 2), x)


def test_missing_data_is_one_line(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    import main

    monkeypatch.setenv("NORMLAB_SHARED", str(tmp_path / "nowhere"))
    r = CliRunner().invoke(main.app, ["--device", "cpu", "reproduce", "bin-cifar", "--out",
                                      str(tmp_path / "r")])
    assert r.exit_code == 2
    out = r.output.strip()
    assert out.startswith("error: CIFAR-10 not found") and "--download" in out
    assert len(out.splitlines()) == 1


@pytest.mark.gpu
def test_gpu_resident_data_augments_on_device_like_cpu():
    from classify.data import DataSplit, TensorDataset, augment

    x = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    split = DataSplit(TensorDataset(x, torch.arange(64) % 4, list("abcd")), {}).to("cuda")
    assert split.train.x.is_cuda and split.train.y.is_cuda
    idx = torch.randperm(64, generator=torch.Generator().manual_seed(0))[:32]
    on_gpu = augment(split.train.x[idx], torch.Generator().manual_seed(5), 4)
    assert on_gpu.is_cuda
    assert torch.equal(on_gpu.cpu(), augment(x[idx], torch.Generator().manual_seed(5), 4))


def _trains_like_stylize_train(runs):
    """A reproduction's runs use the loss weights `stylize train` defaults to for their --loss
    (they once passed the absolute loss's weights to the relative loss: style 1,000× too
    strong)."""
    from stylize.train import RELATIVE_WEIGHTS

    for r in runs:
        saved = json.loads((Path(r["folder"]) / "config.json").read_text())
        assert saved["loss"] == "relative"
        assert {k: saved[k] for k in RELATIVE_WEIGHTS} == RELATIVE_WEIGHTS, r["folder"]


def test_new_style_smoke_report(tiny):
    """norm-only fine-tuning of a base model vs from scratch, stopped by CPU time, resumed
    between the time points, losses on held-out photos; a re-run only reads the runs back."""
    from stylize.train import TrainConfig, train

    _folder(tiny / "ns_content", 1, 32, 40, 30)  # 4 held out by the split rule
    styles = []
    for k in range(2):
        p = tiny / f"ns_style{k}.png"
        Image.fromarray(np.random.default_rng(40 + k).integers(0, 256, (48, 48, 3),
                                                                dtype=np.uint8)).save(p)
        styles.append(str(p))
    base = train(TrainConfig(style_image=str(tiny / "style.png"), content_dir=str(tiny / "ns_content"),
                             norm="bin", out=str(tiny / "ns_base"), image_size=32, batch_size=2,
                             steps=3, device="cpu"), encoder=TinyEncoder(), show_bar=False)
    ctx = _ctx(tiny, "new-style", data=str(tiny / "ns_content"), style_image=",".join(styles),
               style_model=str(base), encoder=TinyEncoder())
    md, res = _check_report(reproduce("new-style", ctx), 2)
    assert "### Held-out style loss by CPU time" in md and "Against a long from-scratch run" in md
    runs = res["runs"]
    assert sorted((Path(r["style"]).stem, r["method"]) for r in runs) == [
        ("ns_style0", "norm-only"), ("ns_style0", "scratch"), ("ns_style1", "norm-only"),
        ("ns_style1", "scratch")]
    # the reference is the first style's scratch run continued, not a second run
    ref = [x for x in res["rows"] if x["method"] == "scratch-reference"]
    assert len(ref) == 1 and Path(ref[0]["style"]).stem == "ns_style0"
    assert ref[0]["at_minutes"] > max(x["at_minutes"] for x in res["rows"] if x is not ref[0])
    for r in runs:  # more CPU time, more steps; every time point kept its own model
        steps = [r["steps"][f"{m:g}"] for m in r["minutes"]]
        assert steps == sorted(steps) and steps[0] >= 1
        assert r["cpu_seconds"] >= r["minutes"][-1] * 60
    assert all(np.isfinite(x["style_loss"]) and x["style_loss"] > 0 for x in res["rows"])
    _trains_like_stylize_train(runs)
    # held-out photos never trained on
    split = next(Path(ctx.runs).glob("content-split-*"))
    held = {p.resolve() for p in (split / "heldout").iterdir()}
    assert held and not held & {p.resolve() for p in (split / "train").iterdir()}
    from stylize.photos import content_split  # the project's one split, not a report's own

    assert held <= {p.resolve() for p in content_split(tiny / "ns_content")["heldout"]}
    # norm-only changed only norm parameters of the base
    import norms
    from stylize.model import load_style_net

    b, _ = load_style_net(base)
    ft = next(r for r in runs if r["method"] == "norm-only")
    f, _ = load_style_net(Path(ft["folder"]) / "model.safetensors")
    normp = {f"{mn}.{pn}" for mn, m in f.named_modules() if isinstance(m, norms.ConditionalNorm)
             for pn, _ in m.named_parameters()}
    assert normp
    fb = dict(b.named_parameters())
    for name, p in f.named_parameters():
        if name not in normp:
            assert torch.equal(p, fb[name]), name
    again = reproduce("new-style", ctx)  # reuses every run
    assert json.loads((again.parent / "results.json").read_text())["runs"] == runs


def test_strokes_smoke_report(tiny):
    """Each style-scale variant fine-tunes the same base for the same CPU time; held-out photos
    are scored at every scale; the wavelength statistic grows with the size of a pattern."""
    from experiments.reproduce.strokes import BUDGETS, stroke_wavelength
    from stylize.train import TrainConfig, train

    _folder(tiny / "st_content", 1, 32, 40, 50)  # 4 held out by the split rule
    base = train(TrainConfig(style_image=str(tiny / "style.png"), content_dir=str(tiny / "st_content"),
                             norm="bin", out=str(tiny / "st_base"), image_size=32, batch_size=2,
                             steps=2, device="cpu"), encoder=TinyEncoder(), show_bar=False)
    ctx = _ctx(tiny, "strokes", data=str(tiny / "st_content"), style_image=str(tiny / "style.png"),
               style_model=str(base), encoder=TinyEncoder())
    md, res = _check_report(reproduce("strokes", ctx), 1)
    assert "### Held-out scores" in md and "style ×2" in md and "Paired differences" in md
    runs = res["runs"]
    assert [r["scales"] for r in runs] == [list(v) for v in BUDGETS["smoke"].variants]
    for r in runs:  # same CPU budget, same base; the style trained is the base's own (a clash)
        assert r["cpu_seconds"] >= r["minutes"][-1] * 60
        cfg = json.loads((Path(r["folder"]) / "config.json").read_text())
        assert cfg["train_all"] and cfg["from_model"] == str(base)
        assert cfg["style_scales"] == r["scales"]
    _trains_like_stylize_train(runs)
    assert all(len(v) == 4 and all(np.isfinite(v)) for v in res["scores"].values())
    # stripes of period 16 px against period 4 px
    xs = torch.arange(64.0)
    x = torch.zeros(1, 3, 64, 64)
    wide = x + 50 * torch.sin(2 * math.pi * xs / 16)[None, None, None, :]
    fine = x + 50 * torch.sin(2 * math.pi * xs / 4)[None, None, None, :]
    assert stroke_wavelength(wide, x) > 2 * stroke_wavelength(fine, x)
    with pytest.raises(ValueError, match="one style"):
        reproduce("strokes", _ctx(tiny, "strokes", data=str(tiny / "st_content"),
                                  style_image="a.png,b.png", style_model=str(base),
                                  encoder=TinyEncoder()))


def test_sweep_trains_seed_major(tmp_path, monkeypatch):
    """An interrupted CPU sweep should leave whole seeds of every variant, so runs go lowest
    seed first; results still come back in plan order."""
    import experiments.reproduce.sweep as sw

    specs = sw.plan({"data": "x", "epochs": 1}, ["bn", "bin", "ibn_a"], [0, 1], [20], tmp_path)
    order = []

    def fake(spec, show_bar=True):
        order.append((spec.label, spec.seed))
        return sw.RunResult(spec.label, spec.depth, spec.seed, "", spec.recipe["out"], {"t": 1.0})

    monkeypatch.setattr(sw, "run_one", fake)
    res = sw.run_sweep(specs)
    assert order == [("bn", 0), ("bin", 0), ("ibn_a", 0), ("bn", 1), ("bin", 1), ("ibn_a", 1)]
    assert [(r.label, r.seed) for r in res] == [(s.label, s.seed) for s in specs]


def test_sweep_amp_policy(monkeypatch):
    """Autocast for reproductions: CUDA only for the long `full` schedules; CPU only for the `cpu`
    budget and only where bf16 is native (emulated bf16 is slower than float32)."""
    import engine.devices as devices
    from experiments.reproduce.budgets import precision_line, sweep_amp

    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert sweep_amp(cuda, "full") and not sweep_amp(cuda, "cpu")
    for native in (True, False):
        monkeypatch.setattr(devices, "cpu_native_bf16", lambda: native)
        assert sweep_amp(cpu, "cpu") is native
        assert not sweep_amp(cpu, "smoke") and not sweep_amp(cpu, "full")
    assert precision_line({"amp": False, "device": "cpu"}) == "Precision: float32."
    assert "bf16 autocast on cpu" in precision_line({"amp": True, "device": "cpu"})
    assert "autocast on cuda" in precision_line({"amp": True, "device": "cuda:0"})
    # what the runs recorded wins over the recipe: a run resumed elsewhere can change precision
    line = precision_line({"amp": True, "device": "cpu"},
                          ["bfloat16", "bfloat16", "bfloat16+float32", ""])
    assert "bfloat16 in 2 of 4 runs; bfloat16 then float32 in 1 of 4 runs" in line
    assert "not recorded in 1" in line and "autocast: norm statistics" in line


@pytest.mark.parametrize("name, model", [("new-style", "four_styles_bin"),
                                         ("strokes", "four_styles_bin"),
                                         ("ibn-shift", "candy_bin"), ("divergence", "candy_bin")])
def test_style_model_default_is_the_reproductions_own(tmp_path, name, model):
    """new-style needs a base that has seen several styles (Dumoulin et al.); the shift
    reproductions keep the one style model their measures are named after; a given one wins."""
    from experiments.reproduce import REPRODUCTIONS, _default_style_model

    mod = REPRODUCTIONS[name][0]
    ctx = _ctx(tmp_path, name)
    _default_style_model(mod, ctx)
    assert ctx.style_model == model
    ctx = _ctx(tmp_path, name, style_model="mine.safetensors")
    _default_style_model(mod, ctx)
    assert ctx.style_model == "mine.safetensors"
