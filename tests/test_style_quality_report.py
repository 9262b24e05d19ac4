"""The committed style-quality report is what its score files render to (no hand-edited numbers)."""
from pathlib import Path

from experiments.reproduce.style_quality import render

ROOT = Path(__file__).resolve().parent.parent


def test_committed_report_matches_its_data():
    folder = ROOT / "reports" / "style-quality"
    assert (folder / "README.md").read_text() == render(folder)
