#!/usr/bin/env bash
# The one prepared run on a lent GPU machine (its python3 holds CUDA PyTorch and Triton), from the repo
# root. Writes into $OUT: the gpu tests' JUnit XML, each part's JSON, gpu_runtime.{json,md}, logs.txt.
# Afterwards, here: python benchmarks/gpu.py report --out <those files>  (writes benchmarks/results/gpu.*).
# What the machine lacks travels in .devcarry/ (git-ignored): fashion-mnist/ (Debian's IDX files), whl/
# (constriction's wheel for its Python) and minilm/ (the compressed MiniLM encoder for gpu_runtime.py's whole-encoder
# rows; make it here with: PYTHONPATH=src python benchmarks/gpu_runtime.py --prepare-minilm .devcarry/minilm).
# Every part has its own time limit, so one that hangs or fails
# costs only itself; the CPU compression runs beside the GPU parts on the other half of the cores.
# `gpu_run.sh runtime` runs only the GPU runtime's part (issue 21): its gpu tests, the CUDA-graph wrapper's
# tests and gpu_runtime.py (worst case 150 + 60 + 300 s); with no argument, everything (worst case 150 + 100 + 100 + 230 s, the CPU compression beside it).
set -u
PARTS=${1:-all}
case "$PARTS" in all|runtime) ;; *) echo "usage: $0 [all|runtime]" >&2; exit 2 ;; esac
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
LOGS=$(mktemp -d)
export PYTHONUNBUFFERED=1 DEEPZIP_OFFLINE=1 DEEPZIP_DATA=${DEEPZIP_DATA:-$PWD/.devcarry/fashion-mnist}
export PYTHONPATH=$PWD/src
if ls .devcarry/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .devcarry/whl/*.whl \
    && export PYTHONPATH=$PYTHONPATH:/tmp/site
fi
cores=$(nproc); half=$((cores / 2))
gpu_side="taskset -c 0-$((half - 1))"; cpu_side="taskset -c $half-$((cores - 1))"
command -v taskset >/dev/null || { gpu_side=""; cpu_side=""; }
section() { echo "== $1 ($(date +%T))" >>"$LOGS/all"; }
trap 'cat "$LOGS"/all "$LOGS"/*.log > "$OUT/logs.txt" 2>/dev/null' EXIT

section "machine"
{ nvidia-smi; python3 -c 'import torch, triton; print("torch", torch.__version__, "triton", triton.__version__)'; } >>"$LOGS/all" 2>&1

if [ "$PARTS" = runtime ]; then
  section "gpu tests of the runtime"
  $gpu_side timeout 150 python3 -m pytest -m gpu tests/gpu/test_cuda_runtime.py tests/runtime/test_gpu_kernels.py \
    -p no:cacheprovider -q --junitxml="$OUT/gpu_tests.xml" >"$LOGS/gpu_tests.log" 2>&1
  section "the CUDA-graph wrapper's tests, on CUDA tensors"
  $gpu_side timeout 60 python3 -m pytest tests/runtime/test_gpu_graph.py -p no:cacheprovider -q \
    --junitxml="$OUT/gpu_graph_tests.xml" >"$LOGS/gpu_graph_tests.log" 2>&1
  cpu_job=""
else
  section "CPU compression (background, cores $half-$((cores - 1)))"
  $cpu_side timeout 540 python3 benchmarks/gpu.py compress --out "$OUT" --device cpu \
    --threads "$half" --quiet >"$LOGS/compress_cpu.log" 2>&1 &
  cpu_job=$!

  section "gpu tests"
  $gpu_side timeout 150 python3 -m pytest -m gpu tests/gpu -p no:cacheprovider -q --junitxml="$OUT/gpu_tests.xml" \
    >"$LOGS/gpu_tests.log" 2>&1
  section "lottery level, LeNet-5"
  $gpu_side timeout 100 python3 benchmarks/gpu.py lottery --out "$OUT" --device cuda --quiet >"$LOGS/lottery.log" 2>&1
  section "compression on the GPU"
  $gpu_side timeout 100 python3 benchmarks/gpu.py compress --out "$OUT" --device cuda --quiet >"$LOGS/compress_cuda.log" 2>&1
fi
section "GPU runtime kernels"
if [ -f benchmarks/gpu_runtime.py ]; then
  # the MiniLM rows come last (calibrating 36 layers per batch: an estimated 1-2 min more than the ~40 s before)
  limit=230; [ "$PARTS" = runtime ] && limit=300
  $gpu_side timeout $limit python3 benchmarks/gpu_runtime.py --out "$OUT" --minilm .devcarry/minilm \
    >"$LOGS/gpu_runtime.log" 2>&1
fi
section "waiting for the CPU compression"
[ -z "$cpu_job" ] || wait "$cpu_job"
section "done"
