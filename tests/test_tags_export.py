"""Tags (models with a named head), `query --tag`, and `export` to npz and parquet."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from search.cli import cli
from store import Store
from store.tags import matching_labels
from tests.helpers import SAMPLE_PHOTOS, write_collection
from tests.seeds import IN21K_CLASSES, Served


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_words_match_whole_words_of_labels() -> None:
    labels = ["golden retriever", "Labrador_retriever", "retrievers club", "hotdog", "dog"]
    assert matching_labels(labels, "Retriever") == {"golden retriever", "Labrador_retriever"}
    assert matching_labels(labels, "dog") == {"dog"}


@pytest.fixture(scope="module")
def sample_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled sample photos (and a copy of the coffee) indexed with the default model."""
    folder = tmp_path_factory.mktemp("samples")
    for photo in SAMPLE_PHOTOS:
        shutil.copy(photo, folder / photo.name)
    shutil.copy(folder / "coffee.jpg", folder / "coffee-copy.jpg")
    home = tmp_path_factory.mktemp("home")
    result = run("--home", str(home), "index", str(folder), "--workers", "0")
    assert result.exit_code == 0, result.output
    return home


def test_the_default_model_tags_the_coffee_espresso(sample_home: Path) -> None:
    listed = run("--home", str(sample_home), "tags", "--json").stdout
    counts = {r["tag"]: r["images"] for r in json.loads(listed)}
    assert counts["espresso"] == 2  # the copy reused the vector and the tags with it
    sure_only = run("--home", str(sample_home), "tags", "--json", "--min-score", "0.5").stdout
    sure = {r["tag"] for r in json.loads(sure_only)}
    assert "espresso" in sure and len(sure) < len(counts)
    answer = json.loads(run("--home", str(sample_home), "query", "--path",
                            str(_indexed(sample_home, "rocket.jpg")), "--tag", "espresso",
                            "--json").stdout)  # fmt: skip
    names = sorted(Path(r["path"]).name for r in answer["results"])
    assert names == ["coffee-copy.jpg", "coffee.jpg"]
    none = run("--home", str(sample_home), "query", "--id", "1", "--tag", "zebra")
    assert none.exit_code == 1 and none.stderr.count("\n") == 1 and "zebra" in none.stderr


def _indexed(home: Path, name: str) -> str:
    with Store.open(home) as store:
        return next(p for p in store.catalog.file_states() if Path(p).name == name)


def test_in21k_tags_are_the_checkpoint_class_names_and_leave_with_their_files(
    tmp_path: Path, seed_registry: Served
) -> None:
    photos = write_collection(tmp_path / "photos")
    home = str(tmp_path / "home")
    index = ("--home", home, "index", str(tmp_path / "photos"), "--model", "capi-b14-in21k",
             "--workers", "0")  # fmt: skip
    assert run(*index).exit_code == 0
    rows = json.loads(run("--home", home, "tags", "--json").stdout)
    assert {r["tag"] for r in rows} <= set(IN21K_CLASSES)
    assert sum(r["images"] for r in rows) == 5 * 5  # top-5 of each of the 5 indexed images
    with Store.open(Path(home)) as store:
        retrievers = store.catalog.ids_with_tag("retriever")
        assert retrievers == store.catalog.ids_with_tag("golden retriever") and retrievers
    for name in ("red", "blue", "gradient", "shapes1", "shapes2"):
        photos[name].unlink()
    assert run(*index).exit_code == 0
    assert json.loads(run("--home", home, "tags", "--json").stdout) == []


@pytest.mark.parametrize("suffix", [".npz", ".parquet"])
def test_export_holds_what_the_store_holds(sample_home: Path, tmp_path: Path,
                                           suffix: str) -> None:  # fmt: skip
    out = tmp_path / f"embeddings{suffix}"
    result = run("--home", str(sample_home), "export", str(out))
    assert result.exit_code == 0, result.output
    with Store.open(sample_home) as store:
        expected = {
            r.id: (r.path, store.catalog.vector(r.id)) for r in store.catalog.file_states().values()
        }
        dim, model = store.meta.dim, store.meta.model
    if suffix == ".npz":
        data = np.load(out)
        ids, paths, vectors = data["id"], data["path"], data["vector"]
        assert (str(data["model"]), int(data["dim"])) == (model, dim)
        tags = [json.loads(t) for t in data["tags"]]
    else:
        table = pq.read_table(out)
        ids, paths = table["id"].to_numpy(), table["path"].to_pylist()
        vectors = np.stack(table["vector"].to_numpy(zero_copy_only=False))
        assert table.schema.metadata[b"model"].decode() == model
        tags = [json.loads(t) for t in table["tags"].to_pylist()]
    assert sorted(ids.tolist()) == sorted(expected) and vectors.shape == (len(expected), dim)
    for i, path, vector in zip(ids, paths, vectors, strict=True):
        assert path == expected[int(i)][0]
        assert np.array_equal(vector, expected[int(i)][1])
    assert all(len(t) == 5 for t in tags)


def test_export_refuses_an_unknown_format(sample_home: Path, tmp_path: Path) -> None:
    result = run("--home", str(sample_home), "export", str(tmp_path / "out.csv"))
    assert result.exit_code == 1 and "unknown format" in result.stderr
    assert not list(tmp_path.iterdir())
