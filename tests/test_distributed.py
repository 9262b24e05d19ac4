"""Distributed training: two gloo processes on CPU, each with half of every global batch and
batch statistics synchronised (norms.sync + engine.distributed), end with the same weights and
running statistics as one process that sees the whole batch; single-process behaviour unchanged;
clear errors."""
from __future__ import annotations

import copy
import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

import norms
import norms.sync
from engine import distributed as D

SYNC_NORMS = ["bn", "bn_in", "bin", "ibn", "sn"]
WORLD = 2
GLOBAL_BATCH = 8
STEPS = 4
TOL = 1e-5


class SmallCNN(nn.Module):
    """conv → norm → relu → conv → norm → pool → linear, as small as a real CNN gets."""

    def __init__(self, norm: str) -> None:
        super().__init__()
        layer = norms.get_norm_layer(norm)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.n1 = layer(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.n2 = layer(8)
        self.fc = nn.Linear(8, 4)
        with torch.no_grad():  # gates inside (0, 1): both BIN branches matter, clipping too
            for name, p in self.named_parameters():
                if name.endswith("gate"):
                    p.uniform_(0.3, 0.9)

    def forward(self, x):  # N×3×H×W -> N×4
        x = F.relu(self.n1(self.conv1(x)))
        x = self.n2(self.conv2(x))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def _dataset() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(32, 3, 8, 8, generator=g) * 2 + 1
    return x, torch.randint(0, 4, (32,), generator=g)


def _train(norm: str, env: D.DistEnv, sync: bool = True) -> dict[str, torch.Tensor]:
    """STEPS SGD steps on global batches drawn from one seeded generator on every rank."""
    torch.manual_seed(0)
    if sync:
        model = D.prepare_model(SmallCNN(norm), env)
    else:  # DDP alone: gradients averaged, batch statistics per process
        model = nn.parallel.DistributedDataParallel(SmallCNN(norm))
    base = D.unwrap(model)
    opt = torch.optim.SGD(norms.param_groups(base, lr=0.05, weight_decay=1e-4), lr=0.05,
                          momentum=0.9)
    norms.attach_gate_clipping(opt, base)
    x, y = _dataset()
    order = torch.Generator().manual_seed(2)  # same on every rank: same global batches
    for _ in range(STEPS):
        local = D.shard_batch(torch.randperm(len(x), generator=order)[:GLOBAL_BATCH], env)
        loss = F.cross_entropy(model(x[local]), y[local])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return {k: v.detach().clone() for k, v in base.state_dict().items()}


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    """One torchrun-like process: the env variables torchrun sets, then the engine API."""
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    env = D.init_distributed("cpu")
    assert D.init_distributed("cpu") is env  # idempotent
    result: dict = {"env": (env.rank, env.world_size, env.backend, env.enabled, env.is_main)}
    for norm in SYNC_NORMS:
        result[norm] = _train(norm, env)
    result["bn_local_stats"] = _train("bn", env, sync=False)
    # a synced model handed back to per-process statistics computes exactly what a model that
    # was never synced computes
    torch.manual_seed(3)
    plain = SmallCNN("bin")
    synced = norms.sync_batch_stats(copy.deepcopy(plain))
    result["was_synced"] = norms.batch_stats_synced(synced)
    norms.unsync_batch_stats(synced)
    xb = _dataset()[0][:4]
    result["unsync_exact"] = (type(synced.n1) is norms.BatchInstanceNorm2d
                              and torch.equal(plain(xb), synced(xb))
                              and torch.equal(plain.n1.running_var, synced.n1.running_var))
    result["mean_rank"] = D.all_reduce_mean(float(rank), env)
    result["mean_tensor"] = D.all_reduce_mean(torch.tensor([rank, 2.0 * rank]), env)
    result["broadcast"] = D.broadcast_object(f"run-from-{rank}", env)
    D.barrier(env)
    torch.save(result, Path(out) / f"rank{rank}.pt")
    D.cleanup(env)


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> list[dict]:
    """The whole 2-process job, once for the module: per-rank results."""
    out = tmp_path_factory.mktemp("ddp")
    # The probed port is free when probed, not necessarily when gloo binds it a moment later
    # (anything on the machine may take it in between): a failed start gets a new port, twice.
    for attempt in range(3):
        try:
            mp.spawn(_worker, args=(WORLD, _free_port(), str(out)), nprocs=WORLD, join=True)
            break
        except (mp.ProcessRaisedException, mp.ProcessExitedException):
            if attempt == 2:
                raise
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]


def _max_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max((a[k].double() - b[k].double()).abs().max().item() for k in a)


@pytest.mark.parametrize("norm", SYNC_NORMS)
def test_two_processes_train_like_one(two_process_run, norm):
    single = _train(norm, D.DistEnv(0, 1, 0, torch.device("cpu"), None))
    for r in range(WORLD):
        assert two_process_run[r][norm].keys() == single.keys()
        diff = _max_diff(two_process_run[r][norm], single)
        assert diff <= TOL, f"rank {r}, {norm}: max abs diff {diff:.2e} vs one process"
    # training moved the weights and statistics, so this compares two trained models
    torch.manual_seed(0)
    init = SmallCNN(norm).state_dict()
    moved = [k for k in init if init[k].is_floating_point() and not torch.equal(init[k], single[k])]
    assert any("running_mean" in k for k in moved) and any("conv1" in k for k in moved)


def test_without_sync_two_processes_differ(two_process_run):
    """Control: DDP with per-process (half-batch) statistics misses the 1e-5 match by far, so
    the match above is due to the synchronised statistics."""
    single = _train("bn", D.DistEnv(0, 1, 0, torch.device("cpu"), None))
    assert _max_diff(two_process_run[0]["bn_local_stats"], single) > 1e-3


def test_two_process_helpers(two_process_run):
    r0, r1 = two_process_run
    assert r0["env"] == (0, 2, "gloo", True, True) and r1["env"] == (1, 2, "gloo", True, False)
    assert r0["was_synced"] and r0["unsync_exact"] and r1["unsync_exact"]
    assert r0["mean_rank"] == r1["mean_rank"] == 0.5
    torch.testing.assert_close(r1["mean_tensor"], torch.tensor([0.5, 1.0]))
    assert r0["broadcast"] == r1["broadcast"] == "run-from-0"
    for norm in SYNC_NORMS:  # DDP keeps the ranks identical, buffers included
        assert _max_diff(r0[norm], r1[norm]) == 0.0


@pytest.fixture
def world_of_one(tmp_path, monkeypatch):
    """A real gloo group of one process whose layers take the synchronised path (the all-reduce
    over one rank is the identity), so the synced formulas can be checked against local ones."""
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    monkeypatch.setattr(norms.sync, "group_size", lambda group=None: 2)
    calls = []  # shapes of the all-reduces: proves the synced path ran
    real = dist.all_reduce
    monkeypatch.setattr(dist, "all_reduce", lambda t, *a, **k: (calls.append(tuple(t.shape)),
                                                                real(t, *a, **k))[1])
    yield calls
    dist.destroy_process_group()


@pytest.mark.parametrize("norm", SYNC_NORMS)
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_synced_path_equals_local_path(world_of_one, norm, fmt):
    a = norms.create_norm(norm, 6)
    with torch.no_grad():
        for name, p in a.named_parameters():
            p.uniform_(0.2, 0.9) if name.endswith("gate") else p.normal_(1.0, 0.5)
    b = norms.sync_batch_stats(copy.deepcopy(a))
    assert norms.batch_stats_synced(b)
    assert any(type(m).__name__.startswith("Sync") for m in b.modules())
    x = (torch.randn(4, 6, 5, 7) * 3 + 2).to(memory_format=fmt)
    w = torch.randn(4, 6, 5, 7)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    for _ in range(2):
        ya, yb = a(xa), b(xb)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-5)
    for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, rtol=1e-5, atol=1e-5, msg=name)
    torch.testing.assert_close(dict(b.named_buffers()), dict(a.named_buffers()), rtol=1e-6,
                               atol=1e-6)
    assert len(world_of_one) == 3  # one all-reduce per forward (2), one per backward (1)
    a.load_state_dict(b.state_dict())  # same running statistics: eval must then be bit-equal
    a.eval(), b.eval()  # eval: running statistics, the layer's own forward
    torch.testing.assert_close(b(x), a(x), rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["bin", "sn"])
def test_synced_path_per_sample_affine(world_of_one, norm):
    """forward_affine with per-sample γ, β (ρ) — the conditional norms' call — is synced too."""
    a = norms.create_norm(norm, 6)
    b = norms.sync_batch_stats(copy.deepcopy(a))
    x = torch.randn(4, 6, 5, 7) * 3 + 2
    affine = [torch.rand(4, 6) + 0.5, torch.randn(4, 6)] + ([torch.rand(4, 6)] if norm == "bin"
                                                           else [])
    ga = [t.clone().requires_grad_() for t in affine]
    gb = [t.clone().requires_grad_() for t in affine]
    ya, yb = a.forward_affine(x, *ga), b.forward_affine(x, *gb)
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for ta, tb in zip(ga, gb):
        torch.testing.assert_close(tb.grad, ta.grad, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(b.running_var, a.running_var, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("norm", ["cbn", "cbin", "cibn", "csn"])
def test_synced_conditional_norms(world_of_one, norm):
    """Conditional norms (per-style γ, β tables around a plain norm) are synced through the norm
    they wrap, including a BN whose own γ, β were removed."""
    a = norms.create_norm(norm, 6)
    b = norms.sync_batch_stats(copy.deepcopy(a))
    x = torch.randn(4, 6, 5, 7) * 3 + 2
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = a(xa), b(xb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-5)
    assert len(world_of_one) == 2  # one all-reduce forward, one backward


def test_torch_batchnorm_synced_and_unsupported_refused(world_of_one):
    a = nn.BatchNorm2d(5)
    b = norms.sync_batch_stats(copy.deepcopy(a))
    assert type(b) is norms.sync.SyncTorchBatchNorm2d and isinstance(b, nn.BatchNorm2d)
    x = torch.randn(3, 5, 4, 4) * 2 + 1
    torch.testing.assert_close(b(x), a(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.running_var, a.running_var, rtol=1e-6, atol=1e-6)
    model = nn.Sequential(norms.BatchNorm2d(4), nn.Flatten(), nn.BatchNorm1d(4))
    with pytest.raises(ValueError, match=r"cannot synchronise .*'2' \(BatchNorm1d\)"):
        norms.sync_batch_stats(model)
    assert type(model[0]) is norms.BatchNorm2d  # refused before anything changed


@pytest.mark.parametrize("norm", ["bn", "bin", "ibn", "gn"])
def test_sync_off_single_process_is_bit_identical(norm):
    """Without a process group, sync_batch_stats changes nothing: same classes, same bits."""
    assert not dist.is_initialized()
    torch.manual_seed(0)
    plain = SmallCNN(norm)
    synced = copy.deepcopy(plain)
    assert norms.sync_batch_stats(synced) is synced and not norms.batch_stats_synced(synced)
    assert [type(m) for m in synced.modules()] == [type(m) for m in plain.modules()]
    env = D.init_distributed("cpu")
    assert not env.enabled and env.is_main and env.backend is None
    assert D.prepare_model(synced, env) is synced and D.unwrap(synced) is synced
    x, y = _dataset()
    for model in (plain, synced):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for i in range(2):
            loss = F.cross_entropy(model(x[i * 8:(i + 1) * 8]), y[i * 8:(i + 1) * 8])
            opt.zero_grad()
            loss.backward()
            opt.step()
    for (k, v), (_, w) in zip(plain.state_dict().items(), synced.state_dict().items()):
        assert torch.equal(v, w), k
    D.cleanup(env)


def test_shard_batch_and_single_process_helpers():
    idx = torch.arange(12)
    env = D.DistEnv(1, 3, 1, torch.device("cpu"), "gloo")
    assert D.shard_batch(idx, env).tolist() == [4, 5, 6, 7]
    with pytest.raises(ValueError, match=r"--batch-size 10 does not divide among 3 processes"):
        D.shard_batch(torch.arange(10), env)
    one = D.DistEnv(0, 1, 0, torch.device("cpu"), None)
    assert D.shard_batch(idx, one) is idx
    assert D.all_reduce_mean(2.5, one) == 2.5
    assert D.broadcast_object({"a": 1}, one) == {"a": 1}
    D.barrier(one)


def test_init_distributed_errors(monkeypatch):
    monkeypatch.setattr(D, "_ENV", None)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ValueError, match="MASTER_ADDR is not set .*torchrun"):
        D.init_distributed("cpu")
    with pytest.raises(ValueError, match="--device cuda:1 names one GPU"):
        D.init_distributed("cuda:1")
    with pytest.raises(ValueError, match="--device mps: distributed training runs on CUDA"):
        D.init_distributed("mps")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            D.init_distributed("cuda")
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ValueError, match="RANK='x' is not an integer"):
        D.init_distributed("cpu")
    monkeypatch.setenv("RANK", "5")
    with pytest.raises(ValueError, match="RANK=5 is outside 0..1"):
        D.init_distributed("cpu")
    assert not dist.is_initialized()


ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["bin"])
def test_torchrun_classify_train_matches_one_process(tmp_path, monkeypatch, norm):
    """``torchrun --nproc_per_node 2 main.py --device cpu classify train`` (gloo, the batch split
    across two processes) writes the weights that one process writes for the same command."""
    import subprocess
    import sys

    from safetensors.torch import load_file

    from classify.train import TrainConfig, train
    from test_classify_train import _make_folder

    data = _make_folder(tmp_path / "train", n_per_class=8, size=16)
    monkeypatch.setenv("NORMLAB_CACHE", str(tmp_path / "cache"))
    opts = dict(arch="resnet20", norm=norm, epochs=2, batch_size=8, lr=0.05, seed=3,
                image_size=16, eval_every=0, threads=1)
    one = train(TrainConfig(data=f"folder:{data}", out=str(tmp_path / "one"), device="cpu",
                            **opts), show_bar=False)
    args = [f"--{k.replace('_', '-')}={v}" for k, v in opts.items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NORMLAB_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         "main.py", "--device", "cpu", "classify", "train", f"--data=folder:{data}",
         f"--out={tmp_path / 'two'}", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    a, b = load_file(one), load_file(tmp_path / "two" / "model.safetensors")
    assert a.keys() == b.keys() and any("gate" in k for k in a)
    diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a)
    # 4 optimizer steps through two processes: float32 reduction-order noise (~1e-7 per step)
    # grows with BIN's 10x gate lr; on an AMD EPYC VM the gate of bn1 differs by 1.4e-5. Unsynced
    # batch statistics would normalise with 4 images instead of 8: a far larger change.
    assert diff <= 5 * TOL, f"torchrun vs one process: max abs diff {diff:.2e}"
    metrics = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").open()]
    assert [m["step"] for m in metrics] == [2, 4]  # rank 0 alone wrote the metrics
