#!/usr/bin/env bash
# Session 7, last device call (one H200, <= 300 s): the shipped code after the side-stream revert. GPU tests of
# the prefill / estimation / top-k / budget paths, the select breakdown, the VS / FlexPrefill rows at 64K-128K.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/final_s7b; mkdir -p "$LOG"
start=$(date +%s)
left() { local l=$(( $1 - ($(date +%s) - start) )); [ "$l" -lt 5 ] && l=5; echo "$l"; }
timeout 120 python3 -m pytest -q -m gpu tests/gpu/test_prefill_gpu.py tests/gpu/test_estimation_skew_gpu.py \
    tests/gpu/test_topk_gpu.py tests/gpu/test_coverage_gpu.py tests/gpu/test_vertical_slash_attention_gpu.py > "$LOG/gpu_tests.log" 2>&1
echo "gpu tests rc=$? ($(( $(date +%s) - start )) s)"; grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/gpu_tests.log" | tail -n 8
cd benchmarks
timeout 50 python3 profile_select_kernels.py --lengths 131072 > "$LOG/select_kernels.log" 2>&1
echo "select rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^## |  timeline|    [0-9.]+ ms idle" "$LOG/select_kernels.log" | cut -c1-160
grep -A8 "^| kernel" "$LOG/select_kernels.log" | cut -c1-120
timeout "$(left 290)" python3 bench_prefill.py --methods vertical_slash flexprefill --lengths 65536 131072 --json "$LOG/bench.json" > "$LOG/bench.log" 2>&1
echo "bench rc=$? ($(( $(date +%s) - start )) s)"
sed -n '/^### /,$p' "$LOG/bench.log" | grep -v "^$" | head -n 20
