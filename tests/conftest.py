"""Shared test fixtures: the ../shared data folder (skipped when absent, unless
NORMLAB_REQUIRE_SHARED=1) and a fixed seed."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("NORMLAB_SHARED", ROOT.parent / "shared"))
# the UI's webcam compiles in a background thread on CPUs with native bf16; in the suite such a
# thread would run on into later tests (test_stylize_compiled turns it on where it checks it)
os.environ.setdefault("NORMLAB_BACKGROUND_COMPILE", "0")


def need_shared(*parts: str) -> Path:
    """Path under ../shared; skips the test when missing, fails when NORMLAB_REQUIRE_SHARED=1."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        msg = f"{p} is not available"
        if os.environ.get("NORMLAB_REQUIRE_SHARED") == "1":
            pytest.fail(msg + " but NORMLAB_REQUIRE_SHARED=1")
        pytest.skip(msg)
    return p


@pytest.fixture
def shared():
    """The ../shared folder (see need_shared)."""
    return need_shared()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for a module of tiny tensors: on a busy 2-core box two threads spin
    against each other (many small tiles ran 15× slower). Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
