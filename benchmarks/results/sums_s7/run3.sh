#!/usr/bin/env bash
# Session 7, third call (one H200, <= 330 s): GPU tests of the new paths (top-k / threshold split, Flex budget
# kernel), the join2 experiment + statistics launches, the top-k launch sweep and the Flex budget kernel, the select
# breakdown of VS / FlexPrefill at 128K.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/sums_s7c; mkdir -p "$LOG"
start=$(date +%s)
timeout 100 python3 -m pytest -q -m gpu tests/gpu/test_topk_gpu.py tests/gpu/test_coverage_gpu.py tests/gpu/test_prefill_gpu.py \
    -k "topk or threshold or coverage or budget or flex" > "$LOG/gpu_tests.log" 2>&1
echo "gpu tests rc=$? ($(( $(date +%s) - start )) s)"; grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/gpu_tests.log" | tail -n 6
cd benchmarks
timeout 60 python3 results/sums_s7/sweep.py --only join2 > "$LOG/join2.log" 2>&1
echo "join2 rc=$? ($(( $(date +%s) - start )) s)"; grep -E "window|default|ablation|stats" "$LOG/join2.log"
timeout 70 python3 results/sums_s7/topk_sweep.py > "$LOG/topk.log" 2>&1
echo "topk rc=$? ($(( $(date +%s) - start )) s)"; cat "$LOG/topk.log"
timeout 60 python3 profile_select_kernels.py --lengths 131072 --trace-dir "$LOG" > "$LOG/select_kernels.log" 2>&1
echo "select rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^## |  timeline|    [0-9.]+ ms idle" "$LOG/select_kernels.log" | cut -c1-160 | head -n 24
grep -E "^\| " "$LOG/select_kernels.log" | head -n 14 | cut -c1-140
