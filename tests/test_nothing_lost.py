"""Nothing lost: every way the fault campaign found for `dupes --yes` to remove the last copy of
a picture, each reproduced as a user would run it, and what must hold instead."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from indexer.options import IndexOptions
from indexer.pipeline import index_folders
from search.actions.plan import apply_plan, plan_actions
from search.actions.safety import KeeperCheck, Kept
from search.cli import cli
from search.copies.dupes import DupeOptions, find_duplicates
from search.keeper.policy import parse_keep
from store import Store
from tests.dupes_home import build
from tests.helpers import shapes


def _photos(folder: Path, names: dict[str, int]) -> None:
    """Files named as given, each with the picture of its seed (equal seeds: equal bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, seed in names.items():
        shapes(seed).save(folder / name, format="PNG")


def _pictures_left(folder: Path) -> set[str]:
    """The distinct contents still reachable under `folder` (following links)."""
    found = set()
    for path in folder.rglob("*.png"):
        if path.exists():
            found.add(hashlib.sha256(path.read_bytes()).hexdigest())
    return found


def _run(home: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--home", str(home), *args])
    return result.exit_code, result.output


def test_a_folder_indexed_through_a_link_in_another_run_is_one_folder(
    tmp_path: Path, tiny_options: IndexOptions
) -> None:
    real = tmp_path / "data" / "Photos"
    _photos(real, {"a.png": 1, "b.png": 2, "b-copy.png": 2, "c.png": 3, "d.png": 4})
    (tmp_path / "Photos").symlink_to(real)
    home = tmp_path / "home"
    index_folders(home, [str(real)], tiny_options)
    second = index_folders(home, [str(tmp_path / "Photos")], tiny_options)
    assert second.added == 0  # the same five files, not five more
    with Store.open(home) as store:
        assert store.catalog.count() == 5
        assert all(
            r.path.startswith(str(real)) for r in store.catalog.records(range(1, 99)).values()
        )
    before = _pictures_left(real)

    code, output = _run(home, "dupes", "--exact-only", "--delete", "--yes")

    assert code == 0, output
    assert _pictures_left(real) == before  # every picture still has a copy
    assert sorted(p.name for p in real.iterdir()) in (
        ["a.png", "b.png", "c.png", "d.png"],
        ["a.png", "b-copy.png", "c.png", "d.png"],
    )


def test_a_link_to_an_indexed_file_is_that_file(tmp_path: Path, tiny_options: IndexOptions) -> None:
    pictures, favourites = tmp_path / "Pictures", tmp_path / "Desktop" / "favourites"
    _photos(pictures, {"coffee.png": 5})
    favourites.mkdir(parents=True)
    (favourites / "coffee.png").symlink_to(pictures / "coffee.png")
    home = tmp_path / "home"
    index_folders(home, [str(pictures)], tiny_options)
    index_folders(home, [str(tmp_path / "Desktop")], tiny_options)

    code, output = _run(home, "dupes", "--exact-only", "--delete", "--yes")

    assert code == 0, output
    assert (pictures / "coffee.png").is_file() and (favourites / "coffee.png").exists()
    with Store.open(home) as store:
        assert store.catalog.count() == 1


def test_a_catalog_holding_a_link_and_its_target_never_acts_on_either(tmp_path: Path) -> None:
    """Rows made before links were resolved: the planner sees they are one file."""
    store, ids, photos = build(tmp_path)
    link = photos / "copies" / "a.jpg"
    link.unlink()
    link.symlink_to(photos / "a.jpg")  # the exact pair is now one file by two paths
    groups = find_duplicates(store, DupeOptions(threshold=0.9, keep=parse_keep("largest"))).groups
    acted = {Path(a.source).name for a in plan_actions(groups, "delete", None).actions}
    assert "a.jpg" not in acted
    kept = Kept.of(store.catalog.records([ids["a.jpg"]])[ids["a.jpg"]])
    assert "same file" in (KeeperCheck().fault(kept, str(link)) or "")


@pytest.mark.parametrize("damage", ["removed", "replaced", "overwritten in place"])
def test_a_kept_file_gone_or_changed_after_indexing_keeps_its_copy(
    tmp_path: Path, tiny_options: IndexOptions, damage: str
) -> None:
    photos = tmp_path / "photos"
    _photos(photos, {"one.png": 7, "two.png": 7})
    home = tmp_path / "home"
    index_folders(home, [str(photos)], tiny_options)
    _, output = _run(home, "dupes", "--exact-only", "--json")

    kept = Path(json.loads(output)["groups"][0]["keep"]["path"])
    other = ({"one.png", "two.png"} - {kept.name}).pop()
    st = kept.stat()
    if damage == "removed":
        kept.unlink()
    elif damage == "replaced":
        kept.unlink()
        shapes(99).save(kept, format="PNG")
    else:  # other bytes, same size and mtime: only the content hash can tell
        data = bytearray(kept.read_bytes())
        data[-20] ^= 0xFF
        kept.write_bytes(bytes(data))
        os.utime(kept, ns=(st.st_atime_ns, st.st_mtime_ns))

    _, output = _run(home, "dupes", "--exact-only", "--delete", "--yes")

    assert (photos / other).is_file()  # the only copy left stays
    assert "kept copy" in output


def test_the_keeper_is_checked_again_right_before_acting(tmp_path: Path) -> None:
    """Between the plan (a page shown, a dry run read) and the act, the keeper went."""
    store, ids, photos = build(tmp_path)
    groups = find_duplicates(store, DupeOptions(threshold=0.9, keep=parse_keep("largest"))).groups
    plan = plan_actions(groups, "delete", None)
    assert "b1.jpg" in {Path(a.source).name for a in plan.actions}
    (photos / "b.jpg").unlink()  # the kept copy of b1 and b2
    report = apply_plan(plan, store, tmp_path / "j.jsonl")
    assert (photos / "b1.jpg").is_file() and (photos / "b2.jpg").is_file()
    assert {Path(p).name for p, _ in report.failures} == {"b1.jpg", "b2.jpg"}
    assert store.catalog.records([ids["b1.jpg"]])  # still indexed: it is still there
    assert not (photos / "d.jpg").exists()  # other groups went ahead


def test_destinations_that_lose_or_recycle_files_are_refused(
    tmp_path: Path, tiny_options: IndexOptions
) -> None:
    photos = tmp_path / "photos"
    _photos(photos, {"one.png": 7, "two.png": 7})
    home = tmp_path / "home"
    index_folders(home, [str(photos)], tiny_options)
    before = sorted(p.name for p in photos.iterdir())
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code, output = _run(home, "dupes", "--exact-only", "--move-to", "", "--yes")
        assert code == 2 and "--move-to" in output
        code, output = _run(home, "dupes", "--exact-only", "--move-to", "photos/dupes", "--yes")
        assert code == 1 and "inside the indexed folder" in output
        code, output = _run(home, "dupes", "--exact-only", "--move-to", "/proc/x", "--yes")
        assert code == 1 and "pseudo-filesystem" in output
    finally:
        os.chdir(cwd)
    assert sorted(p.name for p in photos.iterdir()) == before
    code, output = _run(home, "dupes", "--exact-only", "--move-to", str(photos / ".dupes"), "--yes")
    assert code == 0, output
    assert len(list((photos / ".dupes").rglob("*.png"))) == 1  # hidden: never indexed again


def test_an_action_that_fails_exits_non_zero(
    tmp_path: Path, tiny_options: IndexOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    photos = tmp_path / "photos"
    _photos(photos, {"one.png": 7, "two.png": 7})
    home = tmp_path / "home"
    index_folders(home, [str(photos)], tiny_options)
    dest = tmp_path / "dest"
    code, output = _run(home, "dupes", "--exact-only", "--move-to", str(tmp_path / "file"))
    assert code == 0  # a dry run: nothing checked on disk but the place
    (tmp_path / "file").write_text("a file where the folder would be")
    code, output = _run(home, "dupes", "--exact-only", "--move-to", str(tmp_path / "file"), "--yes")
    assert code == 2 and "is a file" in output

    def full(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("search.actions.plan._move_no_overwrite", full)
    code, output = _run(home, "dupes", "--exact-only", "--move-to", str(dest), "--yes")
    assert code == 1 and "No space left on device" in output
    assert len(list(photos.iterdir())) == 2
    with Store.open(home) as store:
        assert store.catalog.count() == 2  # the rows of files left in place came back


def test_only_regular_files_within_the_size_limit_are_read(
    tmp_path: Path, tiny_options: IndexOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    import signal

    photos = tmp_path / "photos"
    _photos(photos, {"good.png": 3})
    (photos / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(photos / "pipe.jpg")
    monkeypatch.setattr("indexer.scan.MAX_FILE_BYTES", 1 << 20)
    with open(photos / "sparse.jpg", "wb") as handle:
        handle.truncate(2 << 20)  # over the (lowered) limit, and nothing but a hole
    signal.alarm(60)  # a read of the pipe would block forever: fail instead
    try:
        report = index_folders(tmp_path / "home", [str(photos)], tiny_options)
    finally:
        signal.alarm(0)
    assert report.added == 1
    why = {Path(f.path).name: f.error for f in report.failed}
    assert set(why) == {"zero.jpg", "pipe.jpg", "sparse.jpg"}
    assert "not a regular file" in why["zero.jpg"] and "not a regular file" in why["pipe.jpg"]
    assert "larger than 1 MiB" in why["sparse.jpg"]
    with Store.open(tmp_path / "home") as store:
        assert set(store.catalog.failures()) >= {str(photos / n) for n in why}
