"""`index --engine ray` on a local Ray cluster: the same ids, paths and vectors as the local
engine, failures reported the same way, shards of a killed run ingested, not embedded again."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from indexer.distributed import Job, RayOptions, embed_to_shards, index_with_ray, shard_folder
from indexer.options import IndexOptions
from indexer.pipeline import index_folders
from indexer.scan import check_folders, scan
from search.cli import cli
from store import Store
from tests.helpers import TINY_NETWORK, shapes, write_collection
from tests.subprocs import REPO

ray = pytest.importorskip("ray", reason="the `ray` extra is not installed")
# Over a minute in all on 2 cores (Ray's start, and torch loading in each worker): `make test`
# runs them; `pytest -m "not slow"` leaves them out.
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def collection(folder: Path) -> Path:
    write_collection(folder)
    for seed in range(10, 22):
        shapes(seed).save(folder / f"more{seed}.png")
    return folder


def snapshot(home: Path) -> dict[str, tuple[int, np.ndarray]]:
    with Store.open(home) as store:
        return {
            p: (r.id, store.catalog.vector(r.id)) for p, r in store.catalog.file_states().items()
        }


def test_ray_gives_what_the_local_engine_gives(tmp_path: Path, tiny_options: IndexOptions) -> None:
    folder = collection(tmp_path / "photos")
    local = index_folders(tmp_path / "local", [str(folder)], tiny_options)
    folders = check_folders([folder])
    options = dataclasses.replace(
        tiny_options, model=dataclasses.replace(tiny_options.model, batch_size=4)
    )
    report = index_with_ray(tmp_path / "ray", list(scan(folders)), folders, options, RayOptions())
    assert (report.added, report.embedded) == (local.added, local.added) == (17, 17)
    assert sorted(f.path for f in report.failed) == sorted(f.path for f in local.failed)
    assert {f.error for f in report.failed} == {f.error for f in local.failed}
    ours, theirs = snapshot(tmp_path / "ray"), snapshot(tmp_path / "local")
    assert ours.keys() == theirs.keys()
    for path, (image_id, vector) in ours.items():
        assert image_id == theirs[path][0]
        np.testing.assert_allclose(vector, theirs[path][1], atol=1e-5)
    assert not list(shard_folder(tmp_path / "ray").rglob("*.parquet"))  # ingested, removed
    again = index_with_ray(tmp_path / "ray", list(scan(folders)), folders, tiny_options,
                           RayOptions())  # fmt: skip
    assert (again.embedded, again.unchanged) == (0, 17)
    # A copy of an indexed file reuses the stored vector, as the local engine does.
    shutil.copy(folder / "more10.png", folder / "more10-copy.png")
    copied = index_with_ray(
        tmp_path / "ray", list(scan(folders)), folders, tiny_options, RayOptions()
    )
    assert (copied.added, copied.embedded, copied.reused) == (1, 0, 1)


def test_shards_of_a_killed_run_are_ingested_not_embedded_again(
    tmp_path: Path, tiny_options: IndexOptions
) -> None:
    from indexer.runtime import load_embedder
    from indexer.shards import write_run
    from indexer.spec import resolve_model

    folder = collection(tmp_path / "photos")
    home = tmp_path / "home"
    folders = check_folders([folder])
    files = list(scan(folders))
    spec = resolve_model(tiny_options.model, None)
    embedder = load_embedder(spec)
    job = Job(spec, embedder.prep, 4, 250_000_000, RayOptions(), shard_folder(home))
    write_run(shard_folder(home), embedder.name, embedder.dim)
    embed_to_shards(files[:8], frozenset(), job)  # ... and then the run was killed
    assert list(shard_folder(home).rglob("*.parquet"))
    report = index_with_ray(home, files, folders, tiny_options, RayOptions())
    # The first 8 files came from the shards: only the others went through the model.
    assert report.embedded + len(report.failed) == len(files) - 8
    with Store.open(home) as store:
        assert store.catalog.count() == 17 and len(store.catalog.failures()) == 2
    # Shards of another model's run are not ingested (run.json says whose they are).
    write_run(shard_folder(home), "another-model", 7)
    embed_to_shards(files[:3], frozenset(), job)
    shapes(99).save(folder / "new.png")
    again = index_with_ray(home, list(scan(folders)), folders, tiny_options, RayOptions())
    assert (again.added, again.embedded) == (1, 1)
    assert not shard_folder(home).exists()


def test_the_cli_engine_ray_and_from_list(tmp_path: Path, tiny_checkpoint: Path) -> None:
    folder = collection(tmp_path / "photos")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(str(p) for p in sorted(folder.glob("more1*.png"))) + "\n")
    result = CliRunner().invoke(cli, [
        "--home", str(tmp_path / "home"), "index", "--engine", "ray", "--from-list", str(listing),
        "--model", TINY_NETWORK, "--weights", str(tiny_checkpoint), "--json",
    ], catch_exceptions=False)  # fmt: skip
    assert result.exit_code == 0, result.output
    with Store.open(tmp_path / "home") as store:
        assert {Path(p).name for p in store.catalog.file_states()} == {
            f"more{i}.png" for i in range(10, 20)
        }
    local = CliRunner().invoke(cli, ["--home", str(tmp_path / "x"), "index", "--from-list",
                                     str(listing)])  # fmt: skip
    assert local.exit_code == 2 and "--engine ray" in local.output


def test_the_local_engine_never_imports_ray(tmp_path: Path, tiny_checkpoint: Path) -> None:
    write_collection(tmp_path / "photos")
    args = ["--home", str(tmp_path / "home"), "index", str(tmp_path / "photos"),
            "--model", TINY_NETWORK, "--weights", str(tiny_checkpoint)]  # fmt: skip
    code = (
        f"import sys\nfrom search.cli import cli\ntry:\n    cli({args!r})\n"
        "except SystemExit:\n    pass\nassert 'ray' not in sys.modules, 'ray imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                          env=os.environ | {"PYTHONPATH": str(REPO)}, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr


def test_a_large_first_load_fills_an_ivf_index_in_parallel_from_the_shards(
    tmp_path: Path, tiny_options: IndexOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    from indexer import distributed

    monkeypatch.setattr(distributed, "PARALLEL_FILL_MIN", 100)
    folder = tmp_path / "photos"
    folder.mkdir()
    for seed in range(240):
        shapes(seed, (48, 32)).save(folder / f"s{seed:03}.png")
    folders = check_folders([folder])
    options = dataclasses.replace(tiny_options, index_type="ivf")
    options = dataclasses.replace(options, model=dataclasses.replace(options.model, batch_size=16))
    report = index_with_ray(tmp_path / "home", list(scan(folders)), folders, options, RayOptions())
    assert report.index_change is not None and report.index_change.kind == "ivf"
    assert not list(shard_folder(tmp_path / "home").rglob("*.parquet"))
    with Store.open(tmp_path / "home") as store:
        assert store.index.count == store.catalog.count() == 240
        queries = np.stack([store.catalog.vector(i) for i in (1, 50, 200)])
        parallel = [[h.id for h in row] for row in store.index.search(queries, 5)]
    with Store.open(tmp_path / "home") as store:  # the same index built in one process
        assert store.index.reindex("ivf").nlist == report.index_change.nlist
        assert [[h.id for h in row] for row in store.index.search(queries, 5)] == parallel
