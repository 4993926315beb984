"""The five model cards through the real loading path: Birder's registry and downloader
(`file://`), our cache dir, `fs_ops.load_model`; then index and query with each."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from indexer.models import ModelCard, weights_file
from indexer.options import Compute
from search.cli import cli
from tests.helpers import resolved_precision, write_collection
from tests.seeds import SEEDS, Served, registered
from tests.subprocs import start_index

pytestmark = pytest.mark.usefixtures("seed_registry")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.mark.parametrize("card", SEEDS, ids=lambda c: c.name)
def test_each_seed_downloads_on_first_use_then_indexes_and_queries(
    card: ModelCard, tmp_path: Path, weights_cache: Path, seed_server: Served
) -> None:
    photos = write_collection(tmp_path / "photos")
    home = str(tmp_path / "home")
    result = run("--home", home, "index", str(tmp_path / "photos"), "--model", card.name,
                 "--workers", "0", "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "Loading model" not in result.stderr  # Birder's INFO logging stays quiet
    assert json.loads(result.stdout)["added"] == 5
    cached = weights_cache / f"{card.weights}.pt"
    assert hashlib.sha256(cached.read_bytes()).hexdigest() == seed_server.sha256[str(card.weights)]
    info = json.loads(run("--home", home, "info", "--json").stdout)
    assert (info["model"], info["dim"]) == (card.name, card.dim)
    assert info["precision"] == resolved_precision(Compute())
    copy = tmp_path / "copy.png"
    shutil.copy(photos["shapes1"], copy)
    answer = json.loads(run("--home", home, "query", str(copy), "-k", "2", "--json").stdout)
    assert Path(answer["results"][0]["path"]) == photos["shapes1"]
    assert answer["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_models_download_verifies_and_writes_only_into_the_cache(
    tmp_path: Path, weights_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = run("models", "download", "pe-core-s16")
    assert result.exit_code == 0, result.output
    card = SEEDS[0]
    assert weights_file(card) == weights_cache / f"{card.weights}.pt"
    assert (weights_cache / f"{card.weights}.pt").is_file()
    assert not (tmp_path / "models").exists()  # Birder's default MODELS_DIR is the cwd
    rows = json.loads(run("models", "--json").stdout)
    assert {r["name"] for r in rows if r["present"]} == {"effnet-lite0", "pe-core-s16"}
    again = run("models", "download", "pe-core-s16")  # present: checked, not fetched
    assert again.exit_code == 0


def test_a_download_with_the_wrong_sha256_leaves_nothing(
    tmp_path: Path, weights_cache: Path, seed_server: Served
) -> None:
    card = SEEDS[0]
    with registered(seed_server, {str(card.weights): "0" * 64}):
        result = run("models", "download", card.name)
    assert result.exit_code == 1
    assert "100%" in result.stderr  # the download's progress bar
    last = result.stderr.splitlines()[-1]
    assert last.startswith("imgsearch: ") and "sha256" in last
    assert not weights_cache.exists() or os.listdir(weights_cache) == []  # no .partial either


def test_a_damaged_cached_file_is_named(tmp_path: Path, weights_cache: Path) -> None:
    card = SEEDS[1]
    weights_cache.mkdir(parents=True)
    (weights_cache / f"{card.weights}.pt").write_bytes(b"truncated")
    write_collection(tmp_path / "photos")
    result = run("--home", str(tmp_path / "home"), "index", str(tmp_path / "photos"),
                 "--model", card.name)  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert f"{card.weights}.pt: its sha256" in result.stderr


def test_offline_says_which_file_and_the_two_ways(
    tmp_path: Path, weights_cache: Path, seed_server: Served
) -> None:
    unreachable = Served(Path("/nonexistent/imgsearch-offline"), seed_server.sha256)
    write_collection(tmp_path / "photos")
    with registered(unreachable):
        result = run("--home", str(tmp_path / "home"), "index", str(tmp_path / "photos"),
                     "--model", "capi-so150m")  # fmt: skip
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    card = SEEDS[2]
    assert str(weights_cache / f"{card.weights}.pt") in result.stderr
    assert "imgsearch models download capi-so150m" in result.stderr
    assert "--weights FILE" in result.stderr
    assert not (tmp_path / "home" / "catalog.sqlite").exists()


def test_size_runs_a_rope_model_at_another_resolution(tmp_path: Path) -> None:
    photos = write_collection(tmp_path / "photos")
    home = str(tmp_path / "home")
    base = ("--home", home, "index", str(tmp_path / "photos"), "--model", "pe-core-s16",
            "--workers", "0")  # fmt: skip
    odd = run(*base, "--size", "50")
    assert odd.exit_code == 2 and "--size 50: " in odd.stderr
    assert "multiple of its patch size 16" in odd.stderr
    result = run(*base, "--size", "48", "--json")  # the tiny net's own size is 32
    assert result.exit_code == 0, result.output
    info = json.loads(run("--home", home, "info", "--json").stdout)
    assert info["input_size"] == 48
    (tmp_path / "photos" / "new.png").write_bytes(photos["red"].read_bytes() + b"")
    shutil.copy(photos["gradient"], tmp_path / "photos" / "gradient2.png")
    again = run(*base, "--json")  # the recorded size is used without repeating it
    assert again.exit_code == 0 and json.loads(again.stdout)["added"] == 2
    other = run(*base, "--size", "64")
    assert other.exit_code == 2 and "made at 48" in other.stderr
    copy = tmp_path / "copy.png"
    shutil.copy(photos["shapes2"], copy)
    answer = json.loads(run("--home", home, "query", str(copy), "--json").stdout)
    assert Path(answer["results"][0]["path"]) == photos["shapes2"]
    assert answer["results"][0]["score"] == pytest.approx(1.0, abs=1e-4)


def test_a_fresh_process_keeps_birder_and_torch_quiet(
    tmp_path: Path, tiny_checkpoint: Path
) -> None:
    """Birder's import resets its logger to INFO and torch warns about CUDA: neither shows."""
    write_collection(tmp_path / "photos")
    process = start_index(tmp_path / "home", tmp_path / "photos", tiny_checkpoint)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 0
    assert [line for line in stderr.splitlines() if "skipped" not in line] == []
