"""The import rules in `make lint` (import-linter, pyproject.toml) fail on a planted breach.

Each case copies the three packages to a temp folder, adds one import, and runs `lint-imports`
there: the clean copy passes, every planted breach fails and names the broken contract.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT = Path(sys.executable).with_name("lint-imports")


def lint(tree: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT), "--no-cache", str(tree / "pyproject.toml")],
        cwd=tree, capture_output=True, text=True, timeout=120,
        env=os.environ | {"PYTHONPATH": str(tree)},
    )  # fmt: skip


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    for package in ("store", "indexer", "search"):
        shutil.copytree(
            REPO / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_tree_as_it_is_keeps_every_contract(tree: Path) -> None:
    done = lint(tree)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 kept, 0 broken" in done.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        ("store/tags.py", "import search.render", "Imports go one way"),
        ("indexer/plan.py", "from search import records", "Imports go one way"),
        ("search/query.py", "from store.pairs import similar_pairs", "only through its face"),
        ("indexer/scan.py", "import store.schema", "only through its face"),
        ("search/steps.py", "from search.copies import dupes", "No import circles"),
    ],
)
def test_a_planted_breach_fails(tree: Path, module: str, line: str, contract: str) -> None:
    path = tree / module
    original = path.read_text()
    try:
        path.write_text(original + f"\n{line}  # planted\n")
        done = lint(tree)
    finally:
        path.write_text(original)
    assert done.returncode != 0, done.stdout
    broken = done.stdout.split("Broken contracts", 1)[-1]
    dotted = module.removesuffix(".py").replace("/", ".")
    named = dotted in broken or "." + dotted.rsplit(".", 1)[1] + " ->" in broken  # a circle
    assert contract in broken and named, broken
