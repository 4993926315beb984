"""Kills mid-action, at chosen instants: the process dies (os._exit, no cleanup) right before or
right after a file is touched, and `undo` must still bring every file and row back; an `undo`
killed midway must finish when run again."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from search.cli import cli
from store import Store
from tests.dupes_home import build, tree_digest
from tests.subprocs import cli_code, killed_at


def _killed(target: str, when: str, count: int, code: str) -> None:
    assert killed_at(target, when, count, textwrap.dedent(code)) == 9  # killed where meant


_cli = cli_code


def _journal(home: Path) -> Path:
    return max((home / "journals").glob("*.jsonl"), key=lambda p: p.stat().st_mtime_ns)


def _answers_only_for_files_on_disk(home: Path) -> None:
    with Store.open(home) as store:
        records = store.catalog.records(range(1, 1000)).values()
        assert all(Path(r.path).exists() for r in records)
        assert store.index.count == store.catalog.count()


@pytest.mark.parametrize(
    ("kind", "when"),
    [("move", "before"), ("move", "after"), ("trash", "after")],
)
def test_a_kill_mid_action_leaves_a_journal_undo_fully_reverses(
    tmp_path: Path, kind: str, when: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # the trash of this test
    store, ids, photos = build(tmp_path)
    store.close()
    home = tmp_path / "home"
    before = tree_digest(photos)
    act = ["--move-to", str(tmp_path / "dupes")] if kind == "move" else ["--trash"]
    args = ["--home", str(home), "dupes", "--threshold", "0.9", "--keep", "largest", *act]

    # Killed at the second file: right after its intent line, or right after it moved.
    _killed("search.actions.plan._do", when, 2, _cli(*args, "--yes"))

    _answers_only_for_files_on_disk(home)  # no row for a moved file, even now
    result = CliRunner().invoke(cli, ["undo", str(_journal(home))])
    assert result.exit_code == 0, result.output
    assert "not restored" not in result.output
    assert tree_digest(photos) == before
    with Store.open(home) as store:
        assert store.catalog.count() == store.index.count == len(ids)


def test_a_killed_undo_finishes_when_run_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ids, photos = build(tmp_path)
    store.close()
    home = tmp_path / "home"
    before = tree_digest(photos)
    args = ["--home", str(home), "dupes", "--threshold", "0.9", "--keep", "largest"]
    result = CliRunner().invoke(cli, [*args, "--move-to", str(tmp_path / "dupes"), "--yes"])
    assert result.exit_code == 0, result.output
    journal = _journal(home)

    # Killed after the third file is back: files partly back, no row back yet.
    _killed("search.actions.plan._move_no_overwrite", "after", 3, _cli("undo", str(journal)))

    monkeypatch.chdir(tmp_path)
    relative = journal.relative_to(tmp_path)  # a relative journal path restores rows too
    result = CliRunner().invoke(cli, ["undo", str(relative)], catch_exceptions=False)
    assert result.exit_code == 0 and "not restored" not in result.output, result.output
    assert tree_digest(photos) == before
    with Store.open(home) as store:
        assert store.catalog.count() == store.index.count == len(ids)


def test_undo_with_a_relative_journal_path_brings_rows_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, ids, _ = build(tmp_path)
    store.close()
    home = tmp_path / "home"
    args = ["--home", str(home), "dupes", "--threshold", "0.9", "--keep", "largest"]
    CliRunner().invoke(cli, [*args, "--move-to", str(tmp_path / "dupes"), "--yes"])
    monkeypatch.chdir(home / "journals")
    result = CliRunner().invoke(cli, ["undo", _journal(home).name])
    assert result.exit_code == 0 and "not in the index" not in result.output, result.output
    with Store.open(home) as store:
        assert store.catalog.count() == len(ids)


def test_a_kill_mid_orient_fix_leaves_the_original_recoverable(tmp_path: Path) -> None:
    photo = tmp_path / "turned.png"
    Image.new("RGB", (60, 40), (200, 30, 30)).save(photo)
    Image.open(photo).crop((0, 0, 30, 40)).save(photo)  # something a turn changes
    original = photo.read_bytes()
    journal = tmp_path / "home" / "journals" / "orient.jsonl"
    code = f"""
    import os
    from pathlib import Path
    from search.actions.orient_fix import Fix, apply_fixes
    st = os.stat({str(photo)!r})
    fix = Fix({str(photo)!r}, 90, "re-encode", st.st_size, st.st_mtime_ns)
    apply_fixes([fix], Path({str(journal)!r}), Path({str(tmp_path / "home")!r}))
    """
    _killed("search.actions.orient_fix._replace", "after", 1, code)
    assert photo.read_bytes() != original  # the fix landed, its outcome line did not

    result = CliRunner().invoke(cli, ["undo", str(journal)])
    assert result.exit_code == 0, result.output
    assert photo.read_bytes() == original
