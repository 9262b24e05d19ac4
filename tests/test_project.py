"""Project-level checks: the README's commands, the CLI skeleton, layering rules."""
from __future__ import annotations

import ast
import re
import subprocess
import sys

from typer.testing import CliRunner

from conftest import ROOT

runner = CliRunner()


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    return [b.strip() for b in re.findall(r"```bash\n(.*?)```", quick, re.S)]


def test_readme_quickstart_is_two_commands_and_ci_runs_the_test_one():
    cmds = _readme_commands()
    assert len(cmds) == 2 and all("\n" not in c for c in cmds)
    assert "pytest" in cmds[1]
    ci = (ROOT / ".ci" / "run").read_text()
    assert cmds[1] in ci, "the README's test command and .ci/run diverged"
    assert "NORMLAB_REQUIRE_SHARED=1" in ci


def test_help_everywhere():
    from main import app

    for args in ([], ["norms"], ["stylize"], ["classify"], ["ui"], ["norms", "bench"]):
        res = runner.invoke(app, args + ["--help"])
        assert res.exit_code == 0, (args, res.output)
        assert "Usage" in res.output


def test_bad_global_device_is_one_line():
    from main import app

    res = runner.invoke(app, ["--device", "cuda", "norms", "bench", "--no-step", "--shape",
                              "2,4,4,4", "--repeats", "3"])
    if res.exit_code == 0:  # a CUDA machine: the device exists
        return
    assert res.exit_code == 2
    assert "CUDA is not available" in res.output and "Traceback" not in res.output


def _imports(pkg: str) -> set[str]:
    found = set()
    for f in (ROOT / pkg).rglob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found


def test_layering():
    ours = {"norms", "stylize", "classify", "ui", "main", "weights"}
    assert _imports("norms") & ours == set(), "norms/ must import nothing of ours"
    for pkg in ("norms", "stylize", "classify"):
        assert "gradio" not in _imports(pkg), f"{pkg}/ imports gradio"


def test_cli_runs_without_gradio_import():
    code = ("import sys, main; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(main.app, ['norms', 'list']); "
            "assert r.exit_code == 0, r.output; assert 'gradio' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_manifest_files_exist_and_match_sha256():
    import weights

    entries = weights.manifest()
    assert {e["kind"] for e in entries.values()} == {"stylize", "classify"}
    for name, entry in entries.items():
        f = weights.path(name)
        assert f.is_file() and f.stat().st_size < 8 * 2**20, name
        assert weights.sha256(f) == entry["sha256"], f"{name}: file and manifest sha256 differ"
