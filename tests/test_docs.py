"""The docs cannot drift: the CLI reference is what `--help` prints, every command has help with
an example, the README stays a landing page, and every relative link points at a file here."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import click
import pytest

from search.cli import cli

REPO = Path(__file__).resolve().parent.parent
COG = Path(sys.executable).with_name("cog")


def all_commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for name, command in sorted(group.commands.items()):
        found.append((*path, name))
        if isinstance(command, click.Group):
            found += all_commands(command, (*path, name))
    return found


def test_the_cli_reference_is_what_help_prints() -> None:
    done = subprocess.run([str(COG), "--check", "docs/cli.md"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, f"docs/cli.md is stale: run `make docs`\n{done.stderr}"
    text = (REPO / "docs" / "cli.md").read_text()
    for path in all_commands(cli):
        assert f"\n## imgsearch {' '.join(path)}\n" in text


@pytest.mark.parametrize("path", all_commands(cli), ids=" ".join)
def test_every_command_has_help_with_an_example(path: tuple[str, ...]) -> None:
    command: click.Command = cli
    for name in path:
        assert isinstance(command, click.Group)
        command = command.commands[name]
    assert command.help, f"imgsearch {' '.join(path)} has no help"
    assert "imgsearch " in command.help, f"imgsearch {' '.join(path)}: no example in its help"


def test_the_readme_is_a_landing_page() -> None:
    readme = (REPO / "README.md").read_bytes()
    assert len(readme) <= 12 * 1024, f"README.md is {len(readme)} bytes (limit 12 KB)"


def test_relative_links_point_at_files_in_the_repository() -> None:
    pages = [REPO / "README.md", *(REPO / "docs").glob("*.md"), REPO / "bench" / "RESULTS.md"]
    for page in pages:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" in target:
                continue
            assert (page.parent / target).exists(), f"{page.name}: no such file {target}"
    code = [p for d in ("store", "indexer", "search") for p in (REPO / d).rglob("*.py")]
    for path in code:  # a pointer to a file outside the repository helps nobody
        assert "NOTES.md" not in path.read_text(), path
