"""The CLI as users run it: CliRunner, --json parsed, results against a numpy oracle."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import click
import numpy as np
import pytest
from click.testing import CliRunner, Result

from indexer.options import Compute
from indexer.runtime import resolve_runtime
from search.cli import cli
from store import Store
from tests.helpers import TINY_NETWORK, resolved_precision, shapes, write_collection

INDEX_KEYS = {"added", "updated", "unchanged", "removed", "failed", "model", "seconds",
              "images_per_second"}  # fmt: skip


def invoke(home: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--home", str(home), *args], catch_exceptions=False)


@pytest.fixture
def indexed(tmp_path: Path, home: Path, tiny_checkpoint: Path) -> dict[str, Path]:
    files = write_collection(tmp_path / "photos")
    for i in range(10, 22):
        shapes(i).save(tmp_path / "photos" / f"extra{i}.png")
    result = invoke(home, "index", str(tmp_path / "photos"), "--model", TINY_NETWORK,
                    "--weights", str(tiny_checkpoint), "--workers", "0", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    return files


def oracle(home: Path, query: np.ndarray, exclude: int | None = None) -> list[tuple[int, float]]:
    with Store.open(home) as store:
        ids = sorted(r.id for r in store.catalog.file_states().values() if r.id != exclude)
        matrix = np.stack([store.catalog.vector(i) for i in ids])
    scores = matrix @ query
    order = np.argsort(-scores, kind="stable")
    return [(ids[i], float(scores[i])) for i in order]


def check_against_oracle(results: list[dict[str, Any]], expected: list[tuple[int, float]]) -> None:
    assert [r["rank"] for r in results] == list(range(1, len(results) + 1))
    assert [r["id"] for r in results] == [i for i, _ in expected[: len(results)]]
    for r, (_, score) in zip(results, expected, strict=False):
        assert r["score"] == pytest.approx(score, abs=1e-5)


def test_index_json_report(tmp_path: Path, home: Path, tiny_checkpoint: Path) -> None:
    write_collection(tmp_path / "photos")
    result = invoke(home, "index", str(tmp_path / "photos"), "--model", TINY_NETWORK,
                    "--weights", str(tiny_checkpoint), "--workers", "0", "--json")  # fmt: skip
    assert result.exit_code == 0
    report = json.loads(result.stdout)
    assert set(report) >= INDEX_KEYS
    assert (report["added"], report["model"]) == (5, TINY_NETWORK)
    assert {Path(f["path"]).name for f in report["failed"]} == {"corrupt.jpg", "notes.jpg"}
    assert all(f["error"] for f in report["failed"])
    # Each failure is one line on stderr naming the file; stdout holds only the JSON.
    assert result.stderr.count("imgsearch: skipped ") == 2
    assert "corrupt.jpg: not a readable image" in result.stderr


def test_index_text_summary(tmp_path: Path, home: Path, tiny_checkpoint: Path) -> None:
    write_collection(tmp_path / "photos")
    args = ["index", str(tmp_path / "photos"), "--model", TINY_NETWORK,
            "--weights", str(tiny_checkpoint), "--workers", "0"]  # fmt: skip
    first = invoke(home, *args)
    assert first.stdout.startswith("added 5, updated 0, unchanged 0, removed 0, failed 2")
    second = invoke(home, *args)
    assert second.stdout.startswith("added 0, updated 0, unchanged 5, removed 0, failed 2")
    assert len(second.stdout.strip().splitlines()) == 1
    # Old failures are not retried nor listed again: one line says so.
    assert second.stderr == (
        "imgsearch: 2 files that failed before are unchanged and were not retried "
        "(`imgsearch info` lists them)\n"
    )


def test_query_by_id_excludes_itself_and_matches_the_oracle(
    home: Path, indexed: dict[str, Path]
) -> None:
    with Store.open(home) as store:
        record = store.catalog.record_by_path(str(indexed["gradient"]))
        vector = store.catalog.vector(record.id)
    result = invoke(home, "query", "--id", str(record.id), "-k", "5", "--json")
    assert result.exit_code == 0
    data = json.loads(result.stdout)
    assert data["query"] == str(record.id)
    assert record.id not in [r["id"] for r in data["results"]]
    check_against_oracle(data["results"], oracle(home, vector, exclude=record.id))
    assert len(data["results"]) == 5


def test_query_by_path_equals_query_by_id(home: Path, indexed: dict[str, Path]) -> None:
    with Store.open(home) as store:
        record = store.catalog.record_by_path(str(indexed["shapes1"]))
    by_path = json.loads(invoke(home, "query", "--path", str(indexed["shapes1"]), "--json").stdout)
    by_id = json.loads(invoke(home, "query", "--id", str(record.id), "--json").stdout)
    assert by_path["results"] == by_id["results"]
    assert by_path["query"] == str(indexed["shapes1"])


def test_query_images_embed_like_the_indexer(
    tmp_path: Path, home: Path, indexed: dict[str, Path]
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    copy = outside / "copy.png"
    shutil.copy(indexed["shapes2"], copy)  # not indexed: embedded at query time
    result = invoke(home, "query", str(copy), str(indexed["red"]), "-k", "3", "--json")
    assert result.exit_code == 0, result.output
    first, second = json.loads(result.stdout)
    assert first["query"] == str(copy)
    assert first["results"][0]["path"] == str(indexed["shapes2"])
    assert first["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)
    with Store.open(home) as store:
        vector = store.catalog.vector(store.catalog.record_by_path(str(indexed["shapes2"])).id)
    check_against_oracle(first["results"], oracle(home, vector))
    assert second["results"][0]["path"] == str(indexed["red"])  # itself, from its stored vector


def test_min_score_filters(home: Path, indexed: dict[str, Path]) -> None:
    with Store.open(home) as store:
        record = store.catalog.record_by_path(str(indexed["blue"]))
        vector = store.catalog.vector(record.id)
    expected = oracle(home, vector, exclude=record.id)
    threshold = (expected[2][1] + expected[3][1]) / 2  # between the 3rd and 4th neighbour
    result = invoke(home, "query", "--id", str(record.id), "--min-score", str(threshold), "--json")
    assert [r["id"] for r in json.loads(result.stdout)["results"]] == [i for i, _ in expected[:3]]


def test_query_text_output(home: Path, indexed: dict[str, Path]) -> None:
    result = invoke(home, "query", "--path", str(indexed["red"]), "-k", "2")
    lines = result.stdout.strip().splitlines()
    with Store.open(home) as store:
        red = store.catalog.record_by_path(str(indexed["red"])).id
    assert lines[0] == f"query: id {red}  {indexed['red']}"
    by_id = invoke(home, "query", "--id", str(red), "-k", "2").stdout.strip().splitlines()
    assert by_id == lines  # the same image asked by id: the same answer, file named
    assert lines[1].split() == ["rank", "score", "id", "path"]
    assert len(lines) == 4
    rank, score, _id, path = lines[2].split(maxsplit=3)
    assert rank == "1" and 0 <= float(score) <= 1.0001 and Path(path).is_file()


def test_info_and_path(
    home: Path, indexed: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    data = json.loads(invoke(home, "info", "--json").stdout)
    assert data == {"home": str(home), "model": TINY_NETWORK, "dim": 64, "count": 17,
                    "index_type": "IDMap2,Flat", "index_choice": "auto", "index_recall": 1.0,
                    "input_size": None, "precision": resolved_precision(Compute()),
                    "runtime": resolve_runtime(Compute()), "failed": 2}  # fmt: skip
    text = invoke(home, "info").stdout
    assert "corrupt.jpg: not a readable image" in text
    assert invoke(home, "path").stdout.strip() == str(home)
    monkeypatch.setenv("IMGSEARCH_HOME", str(home / "from-env"))
    runner = CliRunner()
    assert runner.invoke(cli, ["path"]).stdout.strip() == str(home / "from-env")
    assert runner.invoke(cli, ["--home", str(home), "path"]).stdout.strip() == str(home)
    # --home after the command name: every command reads it, the environment's home stays out.
    assert runner.invoke(cli, ["path", "--home", str(home)]).stdout.strip() == str(home)
    after = runner.invoke(cli, ["info", "--json", "--home", str(home)])
    assert after.exit_code == 0 and json.loads(after.stdout) == data
    with Store.open(home) as store:
        record = store.catalog.record_by_path(str(indexed["red"]))
    query = ["query", "--id", str(record.id), "-k", "2", "--json"]
    assert runner.invoke(cli, [*query, "--home", str(home)]).stdout == invoke(home, *query).stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["query", "--id", "1"], "no index in"),
        (["info"], "no index in"),
    ],
)
def test_no_index_is_one_line_and_exit_1(home: Path, args: list[str], message: str) -> None:
    result = invoke(home, *args)
    assert result.exit_code == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_errors_on_an_existing_index(tmp_path: Path, home: Path, indexed: dict[str, Path]) -> None:
    cases = {
        ("query", str(tmp_path / "missing.jpg")): "missing.jpg: no such file",
        ("query", str(indexed["text"])): "notes.jpg: not a readable image",
        ("query", "--id", "9999"): "no image with id 9999",
        ("query", "--path", str(tmp_path / "nope.jpg")): "is not in the index",
        ("index", str(tmp_path / "photos"), "--model", "effnet-lite0"): "was built with 'rope_i",
        ("index", str(tmp_path / "no-such-dir")): "no-such-dir: no such folder",
        ("query", str(indexed["red"]), "--model", "effnet-lite0"): "was built with",
        ("index", str(tmp_path / "photos"), "--device", "gpu0"): "--device gpu0: not a device",
    }
    for args, message in cases.items():
        result = invoke(home, *args)
        assert result.exit_code == (2 if "--device" in args else 1), args
        assert result.stderr.startswith("imgsearch: ") and message in result.stderr, args
        assert result.stderr.count("\n") == 1, result.stderr


def test_usage_errors_exit_2(home: Path, indexed: dict[str, Path]) -> None:
    assert invoke(home, "index", ".", "--batch-size", "0").exit_code == 2
    assert invoke(home, "index", ".", "--batch-size", "many").exit_code == 2
    assert invoke(home, "query").exit_code == 2
    assert invoke(home, "query", "--id", "1", "--path", "x").exit_code == 2
    assert invoke(home, "query", "--id", "1", "-k", "0").exit_code == 2


@pytest.mark.parametrize("command", cli.commands.values(), ids=lambda c: c.name)
def test_commands_have_help_with_an_example(command: click.Command) -> None:
    assert command.help and "imgsearch " in command.help


def test_query_by_id_never_imports_torch(home: Path, indexed: dict[str, Path]) -> None:
    code = (
        "import sys\n"
        "from search.cli import cli\n"
        "try:\n"
        f"    cli(['--home', {str(home)!r}, 'query', '--id', '1', '--json'])\n"
        "except SystemExit as e:\n"
        "    assert e.code == 0, e.code\n"
        "heavy = sorted(m for m in ('torch', 'birder', 'torchvision') if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in out.stdout
    assert json.loads(out.stdout.splitlines()[0])["results"]


def test_query_images_in_batches_give_the_same_answers(
    tmp_path: Path, home: Path, indexed: dict[str, Path]
) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    copies = []
    for name in ("gradient", "shapes1", "shapes2"):
        copies.append(outside / indexed[name].name)
        shutil.copy(indexed[name], copies[-1])
    args = ["query", *map(str, copies), "-k", "4", "--json"]
    one_by_one = json.loads(invoke(home, *args, "--batch-size", "1").stdout)
    together = json.loads(invoke(home, *args).stdout)
    assert [r["query"] for r in together] == [str(c) for c in copies]
    for a, b in zip(one_by_one, together, strict=True):
        assert [r["id"] for r in a["results"]] == [r["id"] for r in b["results"]]
        assert [r["score"] for r in a["results"]] == pytest.approx(
            [r["score"] for r in b["results"]], abs=1e-5
        )
    with Store.open(home) as store:
        originals = [
            store.catalog.record_by_path(str(indexed[n])).id
            for n in ("gradient", "shapes1", "shapes2")
        ]
    assert [r["results"][0]["id"] for r in together] == originals
