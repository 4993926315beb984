"""Model cards: `imgsearch models`, short names, weights in the cache or given with --weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from search.cli import cli
from tests.helpers import TINY_DIM, write_collection


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("IMGSEARCH_CACHE", str(folder))
    return folder / "weights"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_models_lists_the_cards_and_what_is_here(cache: Path) -> None:
    rows = json.loads(run("models", "--json").stdout)
    assert [r["name"] for r in rows] == [
        "effnet-lite0",
        "pe-core-s16",
        "pe-core-l14",
        "capi-so150m",
        "capi-b14-in21k",
        "rotnet",
        "sscd",
    ]
    assert [r["name"] for r in rows if r["default"]] == ["effnet-lite0"]
    assert [r["name"] for r in rows if r["present"]] == ["effnet-lite0"]
    assert {r["name"]: r["dim"] for r in rows}["pe-core-l14"] == 1024
    cache.mkdir(parents=True)
    (cache / "rope_vit_reg4_b14_capi-imagenet21k.pt").write_bytes(b"x")
    rows = json.loads(run("models", "--json").stdout)
    assert [r["name"] for r in rows if r["present"]] == ["effnet-lite0", "capi-b14-in21k"]
    assert "pe-core-s16" in run("models").stdout


def test_short_and_birder_names_are_one_model(
    tmp_path: Path, cache: Path, tiny_checkpoint: Path
) -> None:
    write_collection(tmp_path / "photos")
    home = str(tmp_path / "home")
    first = run("--home", home, "index", str(tmp_path / "photos"), "--model", "pe-core-s16",
                "--weights", str(tiny_checkpoint), "--workers", "0", "--json")  # fmt: skip
    assert first.exit_code == 0, first.output
    info = json.loads(run("--home", home, "info", "--json").stdout)
    assert (info["model"], info["dim"]) == ("pe-core-s16", TINY_DIM)
    birder_name = "rope_i_vit_s16_pn_aps_c1_pe-core"
    again = run("--home", home, "index", str(tmp_path / "photos"), "--model", birder_name,
                "--weights", str(tiny_checkpoint), "--json")  # fmt: skip
    assert again.exit_code == 0 and json.loads(again.stdout)["unchanged"] == 5
