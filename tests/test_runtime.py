"""The runtimes: ONNX Runtime against the torch reference, the export cache, what `auto` picks,
and a query that embeds an image without importing torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from indexer.decode import decode_file
from indexer.options import Compute, ModelOptions
from indexer.runtime import load_embedder, resolve_runtime
from indexer.spec import ModelSpec, resolve_model
from store import InvalidOption
from tests.helpers import SAMPLE_PHOTOS, TINY_NETWORK, write_collection
from tests.seeds import SEEDS, Served, tiny_input
from tests.subprocs import REPO


def spec(model: str | None = None, weights: Path | None = None, runtime: str = "auto",
         size: int | None = None) -> ModelSpec:  # fmt: skip
    return resolve_model(ModelOptions(model, weights, size, Compute("cpu", "auto", runtime)), None)


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.asarray((a * b).sum(axis=-1))


def test_auto_is_onnx_on_a_cpu_and_torch_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import indexer.runtime as runtime

    monkeypatch.setattr(runtime, "has_cuda_driver", lambda: False)
    assert resolve_runtime(Compute()) == "onnx"
    assert resolve_runtime(Compute(precision="bf16")) == "torch"  # ONNX Runtime runs fp32 here
    monkeypatch.setattr(runtime, "has_cuda_driver", lambda: True)
    assert resolve_runtime(Compute()) == "torch"
    assert resolve_runtime(Compute(device="cpu")) == "onnx"
    with pytest.raises(InvalidOption, match="runs fp32") as raised:
        resolve_runtime(Compute(device="cpu", precision="fp16", runtime="onnx"))
    assert raised.value.field == "precision"
    with pytest.raises(InvalidOption, match="not a device"):
        resolve_runtime(Compute(device="gpu0"))


def test_the_default_model_on_onnx_runtime_matches_torch_on_real_photos() -> None:
    onnx, torch = load_embedder(spec(), labels=True), load_embedder(spec(runtime="torch"),
                                                                     labels=True)  # fmt: skip
    assert (onnx.runtime, torch.runtime) == ("onnx", "torch")
    decoded = [decode_file(str(p), onnx.prep) for p in SAMPLE_PHOTOS]
    pixels = np.stack([d.pixels for d in decoded])
    views = np.stack([d.views for d in decoded if d.views is not None])
    a, b = onnx.run(pixels, 5, views), torch.run(pixels, 5, views)
    assert cosines(a.vectors, b.vectors).min() >= 0.9999
    assert a.views is not None and b.views is not None
    assert cosines(a.views, b.views).min() >= 0.9999  # the regional views too
    assert [t[0].label for t in a.tags] == [t[0].label for t in b.tags]
    coffee = [p.name for p in SAMPLE_PHOTOS].index("coffee.jpg")
    assert a.tags[coffee][0].label == "espresso"


@pytest.mark.parametrize("card", SEEDS, ids=lambda c: c.name)
def test_every_seed_architecture_exports_and_matches_torch(
    card: object, seed_registry: Served
) -> None:
    from indexer.models import ModelCard

    assert isinstance(card, ModelCard)
    onnx = load_embedder(spec(card.name, size=None))
    torch = load_embedder(spec(card.name, runtime="torch"))
    assert onnx.runtime == "onnx", f"{card.name} fell back to torch"
    side = tiny_input(card)
    pixels = np.random.RandomState(5).randn(3, 3, side, side).astype(np.float32)
    assert cosines(onnx.run(pixels).vectors, torch.run(pixels).vectors).min() >= 0.9999


def test_the_export_is_cached_by_weights_and_a_damaged_one_is_rebuilt(
    tiny_checkpoint: Path, tmp_path: Path, weights_cache: Path
) -> None:
    from indexer.onnx_runtime import export_dir, export_key

    first = load_embedder(spec(TINY_NETWORK, tiny_checkpoint))
    key = export_key(spec(TINY_NETWORK, tiny_checkpoint))
    exported = export_dir() / f"{key}.onnx"
    assert first.runtime == "onnx" and exported.is_file()
    stamp = exported.stat().st_mtime_ns
    load_embedder(spec(TINY_NETWORK, tiny_checkpoint))  # reused, not exported again
    assert exported.stat().st_mtime_ns == stamp
    other = tmp_path / "other.pt"
    other.write_bytes(tiny_checkpoint.read_bytes() + b"\0")  # other bytes: another key
    assert export_key(spec(TINY_NETWORK, other)) != key
    exported.write_bytes(b"damaged")
    again = load_embedder(spec(TINY_NETWORK, tiny_checkpoint))
    assert again.runtime == "onnx" and exported.stat().st_size > 1000  # rebuilt

    # Other bytes of the same size (and the same mtime): the recorded hash tells.
    good = exported.read_bytes()
    st = exported.stat()
    flipped = bytearray(good)
    flipped[len(flipped) // 2] ^= 0x01
    exported.write_bytes(bytes(flipped))
    os.utime(exported, ns=(st.st_atime_ns, st.st_mtime_ns))
    fresh = load_embedder(spec(TINY_NETWORK, tiny_checkpoint))
    assert fresh.runtime == "onnx" and exported.read_bytes() == good  # exported again


def test_a_network_that_does_not_export_runs_with_torch(
    tiny_checkpoint: Path, weights_cache: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    import indexer.onnx_export as export

    def refuse(_spec: ModelSpec) -> object:
        raise export.ExportFailed("an operator ONNX does not have")

    monkeypatch.setattr(export, "export_embedder", refuse)
    embedder = load_embedder(spec(TINY_NETWORK, tiny_checkpoint))
    assert embedder.runtime == "torch"
    assert "does not run on ONNX Runtime (an operator ONNX does not have)" in caplog.text


def test_query_of_an_image_with_a_cached_export_never_imports_torch(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from search.cli import cli

    files = write_collection(tmp_path / "photos")
    home = tmp_path / "home"
    result = CliRunner().invoke(cli, ["--home", str(home), "index", str(tmp_path / "photos")])
    assert result.exit_code == 0, result.output
    outside = tmp_path / "outside.png"
    outside.write_bytes(files["shapes1"].read_bytes() + b"")
    code = (
        "import sys\nfrom search.cli import cli\ntry:\n"
        f"    cli(['--home', {str(home)!r}, 'query', {str(outside)!r}, '--json', '-k', '1'])\n"
        "except SystemExit as e:\n    assert e.code == 0, e.code\n"
        "print('HEAVY', sorted(m for m in ('torch', 'birder', 'torchvision') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=os.environ | {"PYTHONPATH": str(REPO)},
        check=True,
    )
    assert "HEAVY []" in done.stdout
    answer = json.loads(done.stdout.splitlines()[0])
    assert Path(answer["results"][0]["path"]) == files["shapes1"]
