"""Grid runner for classifier training: variants (norm / IBN placement) × seeds × depths (and any
other split, e.g. PACS held-out domains), each run resumable, optionally several at once, one
summary table.

Every run lives in ``RUNS/<arch>-<norm>-s<seed>-<hash>``; the hash covers everything that changes
what is learned (data, epochs, schedule, subsets, ...), not where or how it runs, so two
reproductions asking for the same training share the run. A run is *finished* when its
``result.json`` exists (written after ``classify.train`` returned); an unfinished run with a
checkpoint is continued with ``resume`` (bit-identical to an uninterrupted run on CPU); anything
else starts fresh.

A *ledger* (``Ledger``, ``--ledger FILE``) keeps every finished run's result in one JSON file as
well: a grid longer than one machine's session, resumed on a fresh checkout without ``runs/``,
keeps its finished runs when that file is committed. It holds the numbers, not the models, so
what a report measures on a model (gates, shifted accuracy, divergence) is measured once, while
the model exists, and kept with the run (``fill_measures``).

``jobs > 1`` runs that many training processes at once (spawned; each gets ``cpu_count // jobs``
threads on CPU). On a GPU several small CIFAR models share the device that way; each process
keeps its whole training set on the GPU as uint8 and augments it there
(``classify.data.augment``), so no batch crosses the PCIe bus.
"""
from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from engine.io import write_text_atomic
from engine.metrics import read_metrics

from .report import mean_sd_table, noise_lines

RESULT = "result.json"
# Checkpoint file names of the classify trainer (engine.Trainer: checkpoint.pt; older: last.pt).
CHECKPOINTS = ("checkpoint.pt", "last.pt")
# Recipe fields that do not change what a run learns (kept out of the run's identity).
RUN_ONLY = ("out", "device", "amp", "compile", "resume", "overwrite", "threads", "eval_every",
            "download")
# Recipe fields added after runs were keyed: at these defaults they stay out of the identity, so
# existing run folders and ledger entries keep their keys.
LATER_FIELDS: dict[str, Any] = {"val_split": 0}

# label -> (architecture template, norm). ``{d}`` is the depth (CIFAR ResNet 6n+2, or ImageNet
# ResNet 18/34/50...). IBN-a / IBN-b are architectures; BN is their norm outside the IBN layers.
VARIANTS: dict[str, tuple[str, str]] = {
    "bn": ("resnet{d}", "bn"),
    "in": ("resnet{d}", "in"),
    "bn_in": ("resnet{d}", "bn_in"),
    "bin": ("resnet{d}", "bin"),
    "ibn_a": ("resnet{d}_ibn_a", "bn"),
    "ibn_b": ("resnet{d}_ibn_b", "bn"),
    "gn": ("resnet{d}", "gn"),
    "sn": ("resnet{d}", "sn"),
}


def variant_arch(label: str, depth: int) -> tuple[str, str]:
    """(architecture name, norm) of a variant label at a depth, e.g. ("resnet56_ibn_a", "bn")."""
    if label not in VARIANTS:
        raise ValueError(f"unknown variant {label!r}; known: {', '.join(VARIANTS)}")
    arch, norm = VARIANTS[label]
    return arch.format(d=depth), norm


@dataclass
class RunSpec:
    """One training run of the grid."""

    label: str
    depth: int
    seed: int
    recipe: dict[str, Any]
    group: str = ""  # another grid axis (e.g. the PACS held-out domain); "" when none

    @property
    def key(self) -> str:
        """The run's folder name: readable prefix + hash of what it learns."""
        ident = {k: v for k, v in sorted(self.recipe.items())
                 if k not in RUN_ONLY and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}
        h = hashlib.sha256(json.dumps(ident, sort_keys=True, default=str).encode()).hexdigest()[:10]
        g = f"-{self.group}" if self.group else ""
        return f"{self.recipe['arch']}-{self.recipe['norm']}{g}-s{self.seed}-{h}"


@dataclass
class RunResult:
    """What a finished run produced: final test top-1 per test set, per-epoch curve, time."""

    label: str
    depth: int
    seed: int
    group: str
    folder: str
    test_acc: dict[str, float]
    curve: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_s: float | None = None
    reused: bool = False
    precision: str = ""  # what its metrics lines recorded, e.g. "bfloat16" or "float32+bfloat16"
    # how the session that finished it ran (its last images/s was measured there), e.g.
    # "cpu, 1 thread, up to 2 runs at a time"; "" for runs finished before this was recorded
    ran_as: str = ""
    # top-1 on its own training batches in its last epoch (augmented, in train mode): how well
    # it fit the training domains, beside how well it transfers (test_acc)
    train_acc: float | None = None
    # what a reproduction measured on the trained model, by measure name (``fill_measures``):
    # kept in the ledger so that a report outlives the model files it was measured on
    measures: dict[str, Any] = field(default_factory=dict)

    @property
    def model(self) -> Path:
        return Path(self.folder) / "model.safetensors"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def result_from_dict(d: dict[str, Any]) -> RunResult:
    """A RunResult back from ``to_dict`` (a ledger entry or a report's results.json run)."""
    return RunResult(**{k: d[k] for k in RunResult.__dataclass_fields__ if k in d})


# A ledger entry's fields and the JSON types each may hold (RunResult's fields)
_NUM = (int, float)
_LEDGER_FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {  # field -> (types, required)
    "label": ((str,), True), "depth": ((int,), True), "seed": ((int,), True),
    "group": ((str,), True), "folder": ((str,), True), "test_acc": ((dict,), True),
    "curve": ((list,), False), "seconds": (_NUM, False), "images_per_s": (_NUM + (type(None),), False),
    "reused": ((bool,), False), "precision": ((str,), False), "ran_as": ((str,), False),
    "train_acc": (_NUM + (type(None),), False), "measures": ((dict,), False),
}
_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "an integer",
               float: "a number", bool: "true/false", type(None): "null"}
MAX_LEDGER_BYTES = 64 << 20  # ~100 bytes a run: far above any real grid


def _finite(v: Any) -> bool:
    import math

    return isinstance(v, _NUM) and not isinstance(v, bool) and math.isfinite(v)


def _check_entry(path: Path, key: str, d: Any) -> None:
    """One-line ``ValueError`` naming the ledger, the run and the field when a recorded run is
    not what ``RunResult`` holds (a hand-edited or hostile file)."""
    where = f"ledger {path}: run {key[:80]}"
    if not isinstance(d, dict):
        raise ValueError(f"{where} is {_JSON_NAMES.get(type(d), type(d).__name__)}, not an object")
    missing = [k for k, (_, req) in _LEDGER_FIELDS.items() if req and k not in d]
    if missing:
        raise ValueError(f"{where} lacks {', '.join(missing)}")
    for k, (types, _) in _LEDGER_FIELDS.items():
        if k in d and (not isinstance(d[k], types) or (bool not in types and isinstance(d[k], bool))):
            raise ValueError(f"{where}: {k} is {_JSON_NAMES.get(type(d[k]), 'another type')}, "
                             f"not {' or '.join(dict.fromkeys(_JSON_NAMES[t] for t in types))}")
        if k in ("seconds", "images_per_s", "train_acc") and d.get(k) is not None \
                and not _finite(d[k]):
            raise ValueError(f"{where}: {k} is not a finite number")
    bad = [str(t)[:40] for t, v in d["test_acc"].items() if not _finite(v)]
    if bad or not d["test_acc"]:
        raise ValueError(f"{where}: test_acc must map test sets to numbers"
                         + (f" ({bad[0]!r} is not a number)" if bad else " (it is empty)"))
    for row in d.get("curve", []):
        if not isinstance(row, dict) or not all(_finite(v) for v in row.values()):
            raise ValueError(f"{where}: curve must be a list of objects of numbers")


class Ledger:
    """Finished runs' results in one JSON file, keyed by ``RunSpec.key`` (what a run learns):
    a record that outlives the run folders. A run found here is not trained again. It keeps the
    numbers (test top-1, curve, time, and what reports measured on the models: ``measures``),
    not the models. Written atomically after every finished run; top-level keys other than ``runs``
    (a user's notes, a future field) are kept as they were. Every entry is checked on load: a
    damaged or hostile file is one line naming the run and the field."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.runs: dict[str, dict[str, Any]] = {}
        self.extra: dict[str, Any] = {}  # the file's other top-level keys, written back as read
        if self.path.is_file():
            if self.path.stat().st_size > MAX_LEDGER_BYTES:
                raise ValueError(f"ledger {self.path} is {self.path.stat().st_size >> 20} MB, over "
                                 f"the {MAX_LEDGER_BYTES >> 20} MB a ledger can be")
            try:
                d = json.loads(self.path.read_text(encoding="utf-8"))
            except UnicodeDecodeError:
                raise ValueError(f"ledger {self.path} is not UTF-8 text") from None
            except json.JSONDecodeError as exc:
                raise ValueError(f"ledger {self.path} is not valid JSON (line {exc.lineno}, "
                                 f"column {exc.colno}: {exc.msg})") from None
            except RecursionError:
                raise ValueError(f"ledger {self.path} is nested too deeply to be a ledger") from None
            runs = d.get("runs") if isinstance(d, dict) else None
            if not isinstance(runs, dict):
                raise ValueError(f"ledger {self.path} has no 'runs' object; is it a ledger?")
            for key, entry in runs.items():
                _check_entry(self.path, key, entry)
            self.runs = runs
            self.extra = {k: v for k, v in d.items() if k != "runs"}
        elif self.path.exists():
            from engine.io import file_type

            raise ValueError(f"ledger {self.path} is a {file_type(self.path)}, not a file")

    def get(self, spec: RunSpec) -> RunResult | None:
        """The recorded result of ``spec`` (``reused``), or None."""
        d = self.runs.get(spec.key)
        if d is None:
            return None
        r = result_from_dict(d)  # checked when the ledger was read
        r.reused = True
        return r

    def add(self, spec: RunSpec, result: RunResult) -> None:
        """Record ``result`` as the run ``spec`` (a no-op when already recorded as such)."""
        d = dict(result.to_dict(), reused=False)
        if self.runs.get(spec.key) == d:
            return
        self.runs[spec.key] = d
        write_text_atomic(self.path, json.dumps({**self.extra, "runs": dict(sorted(self.runs.items()))},
                                                indent=1) + "\n")


def plan(base: dict[str, Any], variants: Sequence[str], seeds: Iterable[int],
         depths: Iterable[int], runs_root: str | Path, group: str = "",
         extra: dict[str, Any] | None = None) -> list[RunSpec]:
    """The grid variants × depths × seeds over the recipe ``base`` (a ``TrainConfig`` dict);
    ``extra`` overrides recipe fields for every run (e.g. the PACS domains of ``group``)."""
    specs = []
    for d in depths:
        for v in variants:
            arch, norm = variant_arch(v, d)
            for s in seeds:
                r = dict(base, arch=arch, norm=norm, seed=int(s), **(extra or {}))
                spec = RunSpec(v, int(d), int(s), r, group)
                spec.recipe["out"] = str(Path(runs_root) / spec.key)
                specs.append(spec)
    return specs


def _result_from_folder(spec: RunSpec, seconds: float) -> RunResult:
    folder = Path(spec.recipe["out"])
    rows = read_metrics(folder)
    curve, final = [], {}
    ips = train_acc = None
    # wall seconds over every session of a resumed run (the trainer's cumulative train_s);
    # ``seconds`` (this session's) is the floor for runs logged before train_s existed
    seconds = max([seconds] + [float(r["train_s"]) for r in rows if "train_s" in r])
    for r in rows:
        acc = {k[len("test_acc/"):]: float(v) for k, v in r.items() if k.startswith("test_acc/")}
        if "images_per_s" in r:
            ips = float(r["images_per_s"])
        if "train_acc" in r:
            train_acc = float(r["train_acc"])
        if acc:
            curve.append({"epoch": float(r.get("epoch", len(curve) + 1)), **acc})
            final = acc
    if not final:
        raise ValueError(f"run {folder} finished without a test accuracy in metrics.jsonl")
    precision = "+".join(dict.fromkeys(r["precision"] for r in rows if "precision" in r))
    return RunResult(spec.label, spec.depth, spec.seed, spec.group, str(folder), final, curve,
                     round(seconds, 1), ips, precision=precision, train_acc=train_acc)


def status(spec: RunSpec) -> str:
    """``finished`` | ``partial`` (a checkpoint to resume) | ``new``."""
    folder = Path(spec.recipe["out"])
    if (folder / RESULT).is_file():
        return "finished"
    if any((folder / c).is_file() for c in CHECKPOINTS):
        return "partial"
    return "new"


_DATA_CACHE: dict[tuple, Any] = {}


def _load_split(recipe: dict[str, Any], device):
    """The run's data, decoded once per process (and moved to the GPU once, when training there)."""
    from classify.data import load_data
    from classify.registry import default_input_size

    size = recipe.get("image_size") or default_input_size(recipe["arch"])
    key = (recipe["data"], size, recipe.get("train_domains"), recipe.get("test_domains"),
           str(device))
    if key not in _DATA_CACHE:
        if len(_DATA_CACHE) > 2:  # bound memory: PACS grids load a different split per domain
            _DATA_CACHE.clear()
        split = load_data(recipe["data"], size, recipe.get("train_domains"),
                          recipe.get("test_domains"), bool(recipe.get("download")))
        if getattr(device, "type", "cpu") == "cuda":
            split = split.to(device)
        _DATA_CACHE[key] = split
    return _DATA_CACHE[key]


def ran_as(device, jobs: int) -> str:
    """The conditions a throughput was measured under: device, CPU threads, concurrent runs."""
    import torch

    if getattr(device, "type", str(device)) == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        n = torch.get_num_threads()
        where = f"cpu, {n} thread{'s' if n != 1 else ''}"
    return f"{where}, " + ("alone" if jobs == 1 else f"up to {jobs} runs at a time")


def run_one(spec: RunSpec, show_bar: bool = True, jobs: int = 1) -> RunResult:
    """Train (or resume, or just read back) one run; writes its ``result.json`` when done.
    ``jobs``: how many runs share the machine with this one (recorded with its speed)."""
    from classify.train import TrainConfig, train
    from engine.devices import resolve_device

    folder = Path(spec.recipe["out"])
    done = folder / RESULT
    if done.is_file():
        d = json.loads(done.read_text())
        d.update(reused=True)
        if "train_acc" not in d:  # written before it was kept: read it from the run's log
            d["train_acc"] = _result_from_folder(spec, 0.0).train_acc
        return RunResult(**{k: d[k] for k in RunResult.__dataclass_fields__ if k in d})
    st = status(spec)
    # a new run replaces whatever a run killed before its first checkpoint left
    cfg = TrainConfig.from_recipe(dict(spec.recipe, resume=(st == "partial"),
                                       overwrite=(st == "new")))
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    kw: dict[str, Any] = {}
    if "show_bar" in inspect.signature(train).parameters:
        kw["show_bar"] = show_bar
    try:
        train(cfg, data=_load_split(spec.recipe, device), **kw)
    except ValueError as exc:
        # a run killed after its last checkpoint but before result.json: nothing left to train
        if "already finished" not in str(exc):
            raise
    res = _result_from_folder(spec, time.perf_counter() - t0)
    res.ran_as = ran_as(device, jobs)
    write_text_atomic(done, json.dumps(res.to_dict(), indent=1) + "\n")
    return res


def _exit_with_parent(poll_s: float = 2.0) -> None:
    """Initializer of a spawned sweep worker: end the worker when the sweep process is gone.
    Ctrl-C reaches the whole process group, but a killed sweep (``kill PID``, a closed session)
    would leave its workers training on as orphans, beside the next sweep that resumes the same
    runs. The worker's run stays resumable: checkpoints are written atomically."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        os._exit(1)

    threading.Thread(target=watch, name="sweep-parent-watch", daemon=True).start()


def _worker(spec_dict: dict[str, Any], threads: int, jobs: int) -> dict[str, Any]:
    # entry point of a spawned sweep process
    import torch

    if threads:
        torch.set_num_threads(threads)
    spec = RunSpec(**spec_dict)
    if threads and not spec.recipe.get("threads"):
        spec.recipe["threads"] = threads
    return run_one(spec, show_bar=False, jobs=jobs).to_dict()


Needs = Sequence[str] | Callable[[RunSpec], Sequence[str]]


def reusable(spec: RunSpec, r: RunResult, needs: Needs) -> bool:
    """Whether a recorded run serves a report that measures ``needs`` on the models (names, or
    a function of the run giving them): it holds every one of them, or its model is still there
    to measure."""
    names = needs(spec) if callable(needs) else needs
    return all(n in r.measures for n in names) or r.model.is_file()


def run_sweep(specs: Sequence[RunSpec], jobs: int = 1,
              progress: Callable[[RunResult, int, int], None] | None = None,
              ledger: Ledger | None = None, needs: Needs = ()) -> list[RunResult]:
    """Run every spec (finished ones are read back, partial ones resumed), ``jobs`` at a time,
    lowest seed first. Results come back in the order of ``specs``. With a ``ledger``, runs it
    records count as finished, and every finished run is recorded in it; a recorded run that
    lacks one of the measures ``needs`` (``fill_measures``) and whose model is gone is trained
    again, since only its model can be measured."""
    from tqdm.auto import tqdm

    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    results: list[RunResult | None] = [None] * len(specs)
    todo = []
    for i, s in enumerate(specs):
        if status(s) == "finished":
            results[i] = run_one(s)
            if ledger is not None:
                ledger.add(s, results[i])
        elif ledger is not None and (r := ledger.get(s)) is not None and reusable(s, r, needs):
            results[i] = r
        else:
            todo.append(i)
    # Seed-major order: a sweep cut off part-way (a CPU session ending) leaves whole seeds of
    # every variant, i.e. a complete if smaller comparison, rather than all seeds of a few.
    todo.sort(key=lambda i: (specs[i].seed, i))
    bar = tqdm(total=len(specs), initial=len(specs) - len(todo), desc="runs", unit="run",
               leave=False)

    def done(i: int, r: RunResult) -> None:
        results[i] = r
        if ledger is not None:
            ledger.add(specs[i], r)
        bar.update(1)
        bar.set_postfix_str(f"{r.label} s{r.seed} " + " ".join(f"{v:.1f}%" for v in r.test_acc.values()))
        if progress:
            progress(r, sum(x is not None for x in results), len(specs))

    try:
        if jobs == 1 or len(todo) <= 1:
            for i in todo:
                done(i, run_one(specs[i]))
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            threads = max(1, (os.cpu_count() or 1) // jobs)
            at_once = min(jobs, len(todo))
            with ProcessPoolExecutor(max_workers=at_once,
                                     mp_context=mp.get_context("spawn"),
                                     initializer=_exit_with_parent) as ex:
                futs = {ex.submit(_worker, dataclasses.asdict(specs[i]), threads, at_once): i for i in todo}
                for f in as_completed(futs):
                    done(futs[f], RunResult(**f.result()))
    finally:
        bar.close()
    return [r for r in results if r is not None]


def fill_measures(specs: Sequence[RunSpec], results: Sequence[RunResult], name: str,
                  compute: Callable[[list[RunResult]], list[Any]],
                  ledger: Ledger | None = None) -> None:
    """Give every result a ``measures[name]``: the runs that lack it are measured together
    (``compute`` gets them, with their models on disk, and returns one JSON value each, so a
    costly input such as re-rendered test images is made once), and the values are recorded in
    each run's ``result.json`` and the ``ledger``. ``name`` should carry every setting the value
    depends on (probe size, shifts, ...): a changed setting is a new measure. A run that lacks
    the measure and whose model is gone (a ledger entry on a fresh checkout) is a ValueError
    naming it: only training it again can measure it."""
    todo = [i for i, r in enumerate(results) if name not in r.measures]
    gone = [i for i in todo if not results[i].model.is_file()]
    if gone:
        r = results[gone[0]]
        where = f" (remove its entry from {ledger.path} to train it again)" if ledger else ""
        raise ValueError(f"{len(gone)} run(s) lack the measure {name!r} and their models are "
                         f"gone, e.g. {r.label} seed {r.seed}: {r.model} is missing{where}")
    if not todo:
        return
    values = compute([results[i] for i in todo])
    if len(values) != len(todo):
        raise RuntimeError(f"measure {name!r} returned {len(values)} values for {len(todo)} runs")
    for i, v in zip(todo, values):
        r = results[i]
        r.measures[name] = v
        done = Path(r.folder) / RESULT
        if done.is_file():
            write_text_atomic(done, json.dumps(dict(r.to_dict(), reused=False), indent=1) + "\n")
        if ledger is not None:
            ledger.add(specs[i], r)


def values_by(results: Sequence[RunResult], row: Callable[[RunResult], str],
              col: Callable[[RunResult], Iterable[tuple[str, float]]]) -> dict[tuple[str, str], list[float]]:
    """{(row, column): [one value per seed]} from results, for ``mean_sd_table``."""
    out: dict[tuple[str, str], list[float]] = {}
    for r in results:
        for c, v in col(r):
            out.setdefault((row(r), c), []).append(v)
    return out


def summary_table(results: Sequence[RunResult], baseline: str | None = None) -> str:
    """Markdown: final top-1 (%) per variant (and depth when several) and test set, mean ± sd over
    seeds with n, and a noise verdict for each gap to ``baseline`` (default: the first variant)."""
    if not results:
        return "(no runs)"
    depths = sorted({r.depth for r in results})

    def row(r: RunResult) -> str:
        name = r.label + (f" [{r.group}]" if r.group else "")
        return f"{name} (depth {r.depth})" if len(depths) > 1 else name

    vals = values_by(results, row, lambda r: r.test_acc.items())
    rows = list(dict.fromkeys(row(r) for r in results))
    cols = list(dict.fromkeys(c for (_, c) in vals))
    md = mean_sd_table("variant", rows, cols, vals)
    base = baseline or results[0].label
    lines = []
    for d in depths:
        sub = [r for r in results if r.depth == d]
        rws = list(dict.fromkeys(row(r) for r in sub))
        b = next((x for x in rws if x.split(" ")[0] == base), None)
        if b:
            lines += noise_lines(b, rws, cols, vals)[0]
    return md + ("\n\nGaps to " + base + " (top-1 points):\n" + "\n".join(lines) if lines else "")


def runs_table(results: Sequence[RunResult]) -> str:
    """Markdown: every run on its own line (variant, depth, group, seed, final top-1 per test
    set, training time over all its sessions, images/s and what they were measured on), so each
    seed's number is visible."""
    if not results:
        return "(no runs)"
    # one column per test set; runs with one test set each (PACS: its held-out domain) share one
    single = all(len(r.test_acc) == 1 for r in results)
    tests = [] if single else list(dict.fromkeys(k for r in results for k in r.test_acc))
    group = any(r.group for r in results)
    head = ["variant", "depth"] + (["group"] if group else []) + ["seed"]
    head += ["top-1 (%)"] if single else [f"top-1 {t} (%)" for t in tests]
    head += ["training (min)", "images/s"]
    conditions = any(r.ran_as for r in results)
    head += ["measured on"] if conditions else []
    out = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for r in sorted(results, key=lambda r: (r.group, r.depth, r.label, r.seed)):
        cells = [r.label, str(r.depth)] + ([r.group] if group else []) + [str(r.seed)]
        accs = list(r.test_acc.values()) if single else [r.test_acc.get(t) for t in tests]
        cells += ["—" if a is None else f"{a:.2f}" for a in accs]
        cells += [f"{r.seconds / 60:.1f}", f"{r.images_per_s:.0f}" if r.images_per_s else "—"]
        cells += [r.ran_as or "not recorded"] if conditions else []
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def status_table(specs: Sequence[RunSpec], ledger: Ledger | None = None,
                 needs: Needs = ()) -> str:
    """Markdown: where every run of a grid stands — finished, partial (epochs done of the
    total, last test top-1) or new — and how much of the grid's epochs are done. Reads the run
    folders (and the ``ledger``: a run recorded there is finished unless it lacks a measure of
    ``needs`` and its model is gone, see ``run_sweep``); trains nothing."""
    if not specs:
        return "(no runs)"
    from engine.io import folder_busy

    group = any(s.group for s in specs)
    head = ["variant", "depth"] + (["group"] if group else []) + \
        ["seed", "state", "epochs", "last top-1 (%)", "training (min)", "folder"]
    align = ["---", "---:"] + (["---"] if group else []) + \
        ["---:", "---", "---:", "---:", "---:", "---"]
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(align) + "|"]
    done_ep = total_ep = 0
    counts: dict[str, int] = {}
    for spec in sorted(specs, key=lambda s: (s.seed, s.group, s.depth, s.label)):
        folder = Path(spec.recipe["out"])
        st = status(spec)
        recorded = ledger.get(spec) if ledger is not None and st != "finished" else None
        if recorded is not None and not reusable(spec, recorded, needs):
            recorded = None
        rows = read_metrics(folder) if st != "new" and recorded is None else []
        total = int(spec.recipe.get("epochs") or 0)
        ep = int(max((r.get("epoch", 0) for r in rows), default=0))
        acc = next((v for r in reversed(rows) for k, v in r.items() if k.startswith("test_acc/")),
                   None)
        secs = max((float(r["train_s"]) for r in rows if "train_s" in r), default=None)
        if recorded is not None:
            st, ep, secs = "finished", total, recorded.seconds
            acc = next(iter(recorded.test_acc.values()), None)
        elif st == "finished":
            ep = total
            secs = json.loads((folder / RESULT).read_text()).get("seconds", secs)
        elif st in ("partial", "new") and folder_busy(folder):
            st = "training now"  # "new" too: in its first epoch, before a checkpoint exists
        done_ep, total_ep = done_ep + min(ep, total), total_ep + total
        counts[st] = counts.get(st, 0) + 1
        cells = [spec.label, str(spec.depth)] + ([spec.group] if group else []) + [
            str(spec.seed), st, f"{ep}/{total}", "—" if acc is None else f"{float(acc):.2f}",
            "—" if secs is None else f"{secs / 60:.1f}", folder.name]
        out.append("| " + " | ".join(cells) + " |")
    summary = ", ".join(f"{counts[k]} {k}" for k in ("finished", "training now", "partial", "new")
                        if k in counts)
    share = f"; {100.0 * done_ep / total_ep:.0f} % of the epochs done" if total_ep else ""
    return f"{len(specs)} runs: {summary}{share}.\n\n" + "\n".join(out)
