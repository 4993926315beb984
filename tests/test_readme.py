"""The README's Python API example runs as written, on a fresh home, without a download."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_example() -> str:
    text = (REPO / "README.md").read_text()
    section = text.split("\n## Python API", 1)[1]
    found = re.search(r"```python\n(.*?)```", section, re.S)
    assert found, "the Python API section has no python block"
    return found.group(1)


def test_the_python_api_example_runs(tmp_path: Path) -> None:
    shutil.copytree(REPO / "examples", tmp_path / "examples")
    (tmp_path / "examples" / "coffee-copy.jpg").write_bytes(
        (tmp_path / "examples" / "coffee.jpg").read_bytes()
    )
    done = subprocess.run(
        [sys.executable, "-c", readme_example()], cwd=tmp_path, capture_output=True, text=True,
        env=os.environ | {"PYTHONPATH": str(REPO)}, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("6 added, 0 failed, effnet-lite0")
    # The query image is indexed: it finds itself first, with its byte copy.
    assert {Path(line.split()[-1]).name for line in lines[1:3]} == {"coffee.jpg", "coffee-copy.jpg"}
    assert any(line.startswith("keep ") and "same bytes" in line for line in lines)
    assert (tmp_path / "my-index" / "catalog.sqlite").is_file()
