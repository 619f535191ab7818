#!/usr/bin/env bash
# Session 6, Triton top-k: GPU tests, then stable_topk vs triton_stable_topk and VerticalSlash.select before/after
# (<= 120 s on one H200). Logs in ${OUT:-/tmp}/topk_s6/.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/topk_s6; mkdir -p "$LOG"
start=$(date +%s)
timeout 70 python3 -m pytest -q -m gpu tests/gpu/test_topk_gpu.py > "$LOG/tests.log" 2>&1
echo "gpu tests rc=$? ($(( $(date +%s) - start )) s)"; tail -n 25 "$LOG/tests.log"
timeout 45 python3 benchmarks/results/topk_s6/bench_topk.py > "$LOG/bench.log" 2>&1
echo "bench rc=$? ($(( $(date +%s) - start )) s)"; tail -n 30 "$LOG/bench.log"
