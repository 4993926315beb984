"""Damage nobody checked, and values nobody refused: each is one line and an exit code, or is
repaired, never a traceback or a silent wrong answer."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from search.actions.journal import read_journal
from search.cli import cli
from search.copies.dupes import DupeOptions, find_duplicates
from search.keeper.policy import parse_keep
from store import Store
from tests.dupes_home import as_names, build


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


def _sql(home: Path, statement: str, *values: object) -> None:
    with sqlite3.connect(home / "catalog.sqlite") as db:
        db.execute(statement, values)


def test_a_damaged_cache_row_is_dropped_and_made_again(tmp_path: Path) -> None:
    store, ids, _ = build(tmp_path)
    options = DupeOptions(keep=parse_keep("best"))  # copy mode: the looks are cached too
    first = as_names(find_duplicates(store, options).groups, ids)
    store.close()
    home = tmp_path / "home"
    _sql(home, "UPDATE results_cache SET data = ?", b"\x78\x9c not json")
    _sql(home, "UPDATE content_cache SET data = ?", b"\x78\x9c not zlib")
    with Store.writer(home) as store:
        again = find_duplicates(store, options)
        assert as_names(again.groups, ids) == first and not again.cached
        assert find_duplicates(store, options).cached  # cached over the damaged row


@pytest.mark.parametrize(
    "damage",
    [
        "UPDATE meta SET value = 'x' WHERE key = 'generation'",
        "UPDATE meta SET value = 'garbage{' WHERE key = 'index_spec'",
        "INSERT OR REPLACE INTO meta VALUES ('index_spec', '[1, 2]')",
        "UPDATE meta SET value = 'abc' WHERE key = 'dim'",
        "DROP TABLE failures",
    ],
)
def test_a_damaged_catalog_record_is_one_line_in_every_command(tmp_path: Path, damage: str) -> None:
    store, _, _ = build(tmp_path)
    store.close()
    home = tmp_path / "home"
    _sql(home, damage)
    out = str(tmp_path / "out.csv")
    for command in (["info"], ["check"], ["query", "--id", "1"], ["dupes"], ["export", out]):
        result = CliRunner().invoke(cli, ["--home", str(home), *command])
        assert result.exit_code == 1, (command, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "damaged" in result.output or "missing" in result.output, result.output


def test_check_finds_vectors_that_are_not_finite_unit_vectors(tmp_path: Path) -> None:
    store, ids, _ = build(tmp_path)
    dim = store.meta.dim
    store.close()
    home = tmp_path / "home"
    nan = np.full(dim, np.nan, dtype=np.float32).tobytes()
    long = np.full(dim, 3.0, dtype=np.float32).tobytes()
    _sql(home, "UPDATE images SET vector = ? WHERE id = ?", nan, ids["b1.jpg"])
    _sql(home, "UPDATE images SET vector = ? WHERE id = ?", long, ids["d.jpg"])

    result = CliRunner().invoke(cli, ["--home", str(home), "check", "--json"])

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert sorted(Path(p).name for p in report["bad_vectors"]) == ["b1.jpg", "d.jpg"]
    with Store.open(home) as store:
        assert store.catalog.count() == store.index.count == len(ids) - 2
    result = CliRunner().invoke(cli, ["--home", str(home), "check", "--json"])
    assert json.loads(result.stdout)["bad_vectors"] == []


def test_a_journal_with_foreign_lines_is_still_read(tmp_path: Path) -> None:
    store, _, photos = build(tmp_path)
    store.close()
    home = tmp_path / "home"
    args = ["--home", str(home), "dupes", "--threshold", "0.9", "--keep", "largest"]
    code, output = _run(*args, "--move-to", str(tmp_path / "dupes"), "--yes")
    assert code == 0, output
    journal = next((home / "journals").glob("*.jsonl"))
    with open(journal, "ab") as handle:
        handle.write(b"42\n[1, 2]\n\xff\xfe not utf-8\n")
    _, entries, torn, _ = read_journal(journal)
    assert torn == 3 and entries
    code, output = _run("undo", str(journal))
    assert code == 0, output
    assert (photos / "b1.jpg").is_file() and (photos / "copies" / "a.jpg").is_file()


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["query", "--id", "1", "-k", "99999999999999999999"], 2, "-k"),
        (["dupes", "--threshold", "-1"], 2, "--threshold"),
        (["tags", "--min-score", "nan"], 2, "--min-score"),
        (["query", "--id", "1", "--model", "pe-core-s16"], 1, "built with"),
        (["models", "download"], 2, "imgsearch models download --help"),
    ],
)
def test_bad_values_are_refused_in_one_line(
    tmp_path: Path, args: list[str], code: int, says: str
) -> None:
    store, _, _ = build(tmp_path)
    store.close()
    got, output = _run("--home", str(tmp_path / "home"), *args)
    assert got == code and says in output, output
    assert len(output.strip().splitlines()) == 1


def test_index_says_what_it_was_given(tmp_path: Path) -> None:
    build(tmp_path)[0].close()
    photo = tmp_path / "photo.jpg"
    photo.write_bytes(b"not even an image")
    code, output = _run("--home", str(tmp_path / "home"), "index", str(photo))
    assert code == 1 and "a file, not a folder" in output and "imgsearch query" in output
    code, output = _run("--home", str(tmp_path / "home"), "query", str(tmp_path))
    assert code == 1 and "a folder, not an image file" in output


def test_a_long_first_step_is_announced_on_a_terminal_only(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import sys

    from indexer.notices import notice

    log = logging.getLogger("imgsearch.indexer")
    caplog.set_level(logging.INFO, logger="imgsearch.indexer")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    notice(log, "exporting %s", "m")
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    notice(log, "exporting %s", "n")
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "exporting m"),  # shown without -v
        (logging.INFO, "exporting n"),  # -v detail: a script's failure stays one line
    ]
