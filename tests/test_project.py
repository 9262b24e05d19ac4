"""Project-level checks: the README's commands, the CLI skeleton, layering rules."""
from __future__ import annotations

import ast
import re
import subprocess
import sys

import pytest

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
        assert "Usage" in res.output and "<bool>" not in res.output, (args, res.output)


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


OURS = {"norms", "engine", "stylize", "classify", "experiments", "cli", "ui", "main", "weights"}
# What each layer may import of ours (../shared/architecture.md): nothing imports upward,
# stylize and classify never import each other.
ALLOWED = {
    "norms": set(),
    "engine": {"norms"},
    "stylize": {"norms", "engine", "weights"},
    "classify": {"norms", "engine", "weights"},
    "experiments": {"norms", "engine", "stylize", "classify", "weights"},
    "ui": {"norms", "engine", "stylize", "classify", "experiments", "weights"},
    "cli": {"norms", "engine", "stylize", "classify", "experiments", "ui", "weights"},
}
LIBRARY = ("norms", "engine", "stylize", "classify", "experiments")


@pytest.mark.parametrize("pkg", sorted(ALLOWED))
def test_layering(pkg):
    ours = _imports(pkg) & OURS - {pkg}
    assert ours <= ALLOWED[pkg], f"{pkg}/ imports {sorted(ours - ALLOWED[pkg])}"
    if pkg in LIBRARY:
        assert not {"typer", "gradio", "click"} & _imports(pkg), f"{pkg}/ imports a face library"
    if pkg != "ui":
        assert "gradio" not in _imports(pkg), f"{pkg}/ imports gradio"


def test_help_imports_neither_torch_nor_gradio():
    """`normlab --help` and every sub-command's help stay fast: no torch, no gradio."""
    code = ("import sys, main; from typer.testing import CliRunner; r = CliRunner(); "
            "cmds = [[], ['norms'], ['stylize'], ['classify'], ['reproduce'], ['ui'], "
            "['stylize', 'train'], ['stylize', 'run'], ['classify', 'train'], ['norms', 'bench']]; "
            "codes = [r.invoke(main.app, c + ['--help']).exit_code for c in cmds]; "
            "assert codes == [0] * len(cmds), codes; "
            "heavy = sorted(m for m in ('torch', 'gradio', 'torchvision') if m in sys.modules); "
            "assert not heavy, heavy")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_cli_runs_without_gradio_import():
    code = ("import sys, main; from typer.testing import CliRunner; "
            "r = CliRunner().invoke(main.app, ['norms', 'list']); "
            "assert r.exit_code == 0, r.output; assert 'gradio' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_manifest_files_exist_and_match_sha256():
    import weights

    entries = weights.manifest()
    assert {e["kind"] for e in entries.values()} == {"stylize", "classify", "decoder"}
    for name, entry in entries.items():
        f = weights.path(name)
        assert f.is_file() and f.stat().st_size < 8 * 2**20, name
        assert weights.sha256(f) == entry["sha256"], f"{name}: file and manifest sha256 differ"


def test_every_top_level_package_is_installed():
    """A fresh `pip install` must ship every package of ours (the console script imports them)."""
    import tomllib
    from fnmatch import fnmatch

    conf = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = conf["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [d.name for d in ROOT.iterdir() if (d / "__init__.py").is_file()]
    assert {"norms", "engine", "stylize", "classify", "experiments", "cli", "ui", "weights"} <= set(packages)
    for p in packages:
        assert any(fnmatch(p, pat) for pat in include), f"{p}/ is not in pyproject's packages"
    for d in ("engine", "cli", "experiments", "experiments/reproduce"):
        assert (ROOT / d / "__init__.py").is_file(), f"{d}/ needs an __init__.py to be installed"


def test_every_option_is_described():
    from typer.main import get_command

    import main

    missing = []

    def walk(cmd, path):
        for name, sub in (getattr(cmd, "commands", None) or {}).items():
            walk(sub, path + [name])
        for p in getattr(cmd, "params", []):
            if getattr(p, "param_type_name", "") == "option" and p.name != "help" \
                    and not (p.help or "").strip():
                missing.append(f"{' '.join(path)} {p.opts[0]}")

    walk(get_command(main.app), [])
    assert not missing, missing


def test_cli_lists_every_reproduction():
    import cli.reproduce
    from experiments.reproduce import list_reproductions

    assert cli.reproduce._SUMMARIES == list_reproductions()


def _relative_links(path):
    text = path.read_text(encoding="utf-8")
    for m in re.finditer(r"\]\(([^)\s#]+)(?:#[^)]*)?\)", text):
        if not m.group(1).startswith(("http://", "https://", "mailto:")):
            yield m.group(1)


def test_readme_is_the_entry_and_links_the_guides():
    """The README is what a newcomer reads first (issue 32.5); the guides live in docs/."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert 150 <= len(text.splitlines()) <= 260, "README.md: keep it the entry, move guides to docs/"
    style = text.split("\n## Style transfer\n", 1)[1].split("\n## ", 1)[0]
    assert "(docs/stylize.md)" in style
    for doc in ("stylize", "classify", "benchmarks", "engine", "hostile-inputs", "reproduce", "ui"):
        assert f"(docs/{doc}.md)" in text, f"README.md does not link docs/{doc}.md"
    assert "(reports/README.md)" in text and "## Architecture" in text


def test_relative_links_in_the_docs_resolve():
    files = [ROOT / "README.md", ROOT / "reports" / "README.md",
             *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "reports").glob("*/README.md"))]
    broken = [f"{f.relative_to(ROOT)}: {t}" for f in files for t in _relative_links(f)
              if not (f.parent / t).exists()]
    assert not broken, broken
