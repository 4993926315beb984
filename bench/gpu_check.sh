#!/usr/bin/env bash
# The GPU check: one short run on a machine with a CUDA device (bench/RESULTS.md, "GPU").
#
#     bash bench/gpu_check.sh [OUT_DIR]
#
# Installs the project with the [gpu] extra (faiss-gpu) into .venv-gpu (reusing torch from the
# system's site-packages when it is there), runs the GPU tests and the tests whose `auto`
# choices change when CUDA is present, then the throughput bench at batch 256 on CUDA for
# `--runtime torch` and the default (auto: torch on CUDA), and prints one JSON object. Every
# step's log is kept in OUT_DIR (default: $OUT, else bench/out/gpu). Budget: about 8 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-bench/out/gpu}}"
mkdir -p "$out"
venv=.venv-gpu
started=$(date +%s)

step() {  # step NAME COMMAND...: stdout to $out/NAME.out, stderr to NAME.log, status to NAME.rc
    local name=$1
    shift
    echo "== $name: $*" >&2
    "$@" >"$out/$name.out" 2>"$out/$name.log"
    echo $? >"$out/$name.rc"
}

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv --system-site-packages "$venv"
fi
step install "$venv/bin/pip" install -q -e '.[gpu,dev]'
step cuda "$venv/bin/python" -c \
    'import json, torch, faiss; print(json.dumps({"torch": torch.__version__, "cuda": torch.cuda.is_available(), "device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None, "faiss_gpus": faiss.get_num_gpus()}))'
step gpu_tests "$venv/bin/python" -m pytest -q -m gpu -rs tests
step auto_tests "$venv/bin/python" -m pytest -q -x tests/test_runtime.py tests/test_backbone.py \
    tests/test_pipeline.py tests/test_cli.py tests/test_gpu_faiss.py tests/test_pairs.py
step throughput timeout 300 "$venv/bin/python" bench/index_throughput.py --device cuda \
    --precision auto --batch-size 256 --count 768 --runtimes torch,auto
"$venv/bin/python" - "$out" "$started" <<'EOF'
import json
import sys
import time
from pathlib import Path

out, started = Path(sys.argv[1]), int(sys.argv[2])

def tail(name: str, lines: int = 4) -> list[str]:
    text = ""
    for suffix in (".log", ".out"):
        path = out / f"{name}{suffix}"
        text += path.read_text(errors="replace") if path.is_file() else ""
    return text.splitlines()[-lines:]

def rc(name: str) -> int | None:
    path = out / f"{name}.rc"
    return int(path.read_text()) if path.is_file() else None

report = {"benchmark": "gpu_check", "seconds": int(time.time()) - started}
for name in ("install", "cuda", "gpu_tests", "auto_tests", "throughput"):
    report[name] = {"rc": rc(name), "tail": tail(name)}
for name in ("cuda", "throughput"):
    try:
        report[name]["result"] = json.loads((out / f"{name}.out").read_text())
    except (OSError, ValueError):
        pass
print(json.dumps(report, indent=2))
EOF
