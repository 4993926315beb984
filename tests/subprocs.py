"""`imgsearch index` in a real subprocess, and reading its catalog like any other process."""

from __future__ import annotations

import contextlib
import os
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from tests.helpers import TINY_NETWORK

REPO = Path(__file__).resolve().parent.parent


def start_index(home: Path, folder: Path, weights: Path) -> subprocess.Popen[str]:
    """Index with the tiny Birder net, one commit per 2 images: a run long enough to interrupt."""
    args = ["--home", str(home), "index", str(folder), "--model", TINY_NETWORK,
            "--weights", str(weights), "--batch-size", "2", "--workers", "1", "--json"]  # fmt: skip
    code = f"from search.cli import cli; cli({args!r})"
    return subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=os.environ | {"PYTHONPATH": str(REPO)},
    )  # fmt: skip


def committed(home: Path) -> dict[str, int]:
    """{path: id} as committed in SQLite right now."""
    path = home / "catalog.sqlite"
    if not path.is_file():
        return {}
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30) as db:
        try:
            rows = db.execute("SELECT path, id FROM images").fetchall()
        except sqlite3.OperationalError:  # tables not created yet
            return {}
    return {os.fsdecode(path): image_id for path, image_id in rows}  # paths are stored as bytes


def wait_for(process: subprocess.Popen[str], home: Path, at_least: int) -> None:
    """Until the catalog exists and holds `at_least` images (or the process has ended)."""
    deadline = time.monotonic() + 120
    catalog = home / "catalog.sqlite"
    while (not catalog.is_file() or len(committed(home)) < at_least) and process.poll() is None:
        assert time.monotonic() < deadline, "the index run made no progress"
        time.sleep(0.005)


def survivors(home: Path, grace: float = 10.0) -> list[int]:
    """Processes still running with `home` in their command line after `grace` seconds (Linux:
    read from /proc; elsewhere none are seen)."""
    proc = Path("/proc")
    deadline = time.monotonic() + grace
    while True:
        alive = []
        for entry in proc.glob("[0-9]*") if proc.is_dir() else []:
            try:
                cmdline = (entry / "cmdline").read_bytes()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if os.fsencode(str(home)) in cmdline and state != "Z":
                alive.append(int(entry.name))
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


# Runs `code` with `module.name` replaced by a wrapper that kills the process (exit 9, no
# cleanup, as kill -9 would) at its Nth call: before the call or after it returns.
_KILLER = """
import importlib, os, sys
module, name, when, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
owner = importlib.import_module(module)
original, calls = getattr(owner, name), [0]
def killed(*args, **kwargs):
    calls[0] += 1
    if calls[0] == count and when == "before":
        os._exit(9)
    result = original(*args, **kwargs)
    if calls[0] == count and when == "after":
        os._exit(9)
    return result
setattr(owner, name, killed)
exec(sys.argv[5])
"""


def killed_at(target: str, when: str, count: int, code: str) -> int:
    """Run `code` in a new process killed at the `count`th call of `target` (module.function),
    `when` "before" or "after" it; the exit status (9 when it was killed there)."""
    module, name = target.rsplit(".", 1)
    run = subprocess.run(
        [sys.executable, "-c", _KILLER, module, name, when, str(count), code],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env=os.environ | {"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    return run.returncode


def cli_code(*args: str) -> str:
    """Python that runs `imgsearch ARGS` (for killed_at)."""
    return f"from search.cli import cli; cli.main({list(args)!r}, prog_name='imgsearch')"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def serving(home: Path) -> Iterator[int]:
    """`imgsearch serve` on a free port in a real process; yields the port. Its log goes to a
    file (a pipe nobody reads would fill and stall the server), shown if it does not start."""
    port = free_port()
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(
            [sys.executable, "-c", "from search.cli import cli; cli()", "--home", str(home),
             "serve", "--port", str(port)],
            cwd=REPO, env=os.environ | {"PYTHONPATH": str(REPO)}, stdout=log,
            stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        try:
            _wait_for_port(port, server, log)
            yield port
        finally:
            server.terminate()
            server.wait(timeout=30)


def _wait_for_port(port: int, server: subprocess.Popen[str], log: IO[str]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            log.seek(0)
            raise AssertionError(f"server exited: {log.read()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise AssertionError("server did not start")
