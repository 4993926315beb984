"""`dupes --engine ray` on a local Ray cluster: the candidate join's shards, the local features
and the verification in Ray tasks give the same groups as the local engine, and the result
lands in the catalog's cache like a local run's."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from threadpoolctl import threadpool_limits

from search.cli import cli
from search.copies.candidates import Engine, find_candidates
from search.copies.dupes import DupeOptions, find_duplicates
from store import Store
from tests.helpers import PHOTOS, edits
from tests.test_join_shards import as_rows, descriptors

ray = pytest.importorskip("ray", reason="the `ray` extra is not installed")
pytestmark = pytest.mark.slow  # Ray's start, and a worker process per task slot


@pytest.fixture(scope="module", autouse=True)
def local_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def groups_of(output: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each group's keeper and its members with how they are linked, by file name."""
    found = json.loads(output)
    assert found["mode"] == "copies"
    return sorted(
        (
            Path(g["keep"]["path"]).name,
            sorted((Path(m["path"]).name, str(m.get("link"))) for m in g["members"]),
        )
        for g in found["groups"]
    )


def test_ray_shards_of_the_join_find_what_the_local_join_finds() -> None:
    from search.ray_workers import RayWorkers

    found = descriptors()
    workers = RayWorkers()
    assert workers.shards(1000) == 8  # 4 tasks for each of the cluster's 2 CPUs
    with threadpool_limits(1):  # as each Ray task multiplies: the same bits, on any CPU
        expected = as_rows(find_candidates(found))
    assert as_rows(find_candidates(found, engine=Engine(workers))) == expected


def test_dupes_engine_ray_gives_the_local_groups_and_caches_them(tmp_path: Path) -> None:
    from search.ray_workers import RayWorkers

    photos = tmp_path / "photos"
    photos.mkdir()
    for photo in PHOTOS[:2]:
        edits(photo, photos)
    runner = CliRunner()
    local = tmp_path / "local"
    indexed = runner.invoke(cli, ["--home", str(local), "index", str(photos)])
    assert indexed.exit_code == 0, indexed.output
    on_ray = tmp_path / "ray"
    shutil.copytree(local, on_ray)

    ours = runner.invoke(cli, ["--home", str(on_ray), "dupes", "--engine", "ray", "--json"])
    assert ours.exit_code == 0, ours.output
    theirs = runner.invoke(cli, ["--home", str(local), "dupes", "--json"])
    assert theirs.exit_code == 0, theirs.output
    grouped = groups_of(ours.stdout)
    assert grouped == groups_of(theirs.stdout)
    assert {keep for keep, _ in grouped} == {p.name for p in PHOTOS[:2]}  # the originals
    verified = [link for _, members in grouped for _, link in members if "verified" in link]
    assert verified, "some members were joined by a verification (made in Ray tasks)"
    assert not (on_ray / "dupes-work").exists()  # the join's shards go once it is cached

    with Store.open(on_ray) as store:  # the review page and a later `dupes` read the cache
        again = find_duplicates(store, DupeOptions(workers=RayWorkers()))
        assert again.cached
        assert len(again.groups) == len(grouped)


def test_engine_options_are_checked(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["--home", str(tmp_path), "dupes", "--ray-address", "auto", "--json"]
    )
    assert result.exit_code == 2 and "--ray-address needs --engine ray" in result.output
