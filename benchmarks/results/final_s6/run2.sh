#!/usr/bin/env bash
# Session 6, second final call (one H200, <= 300 s): after _skew_prep and the on-the-fly forcing in the top-k.
# GPU tests of the changed paths, the select breakdown with its timeline, the VS / FlexPrefill rows at 16K-128K.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/final_s6b; mkdir -p "$LOG"
start=$(date +%s)
left() { local l=$(( $1 - ($(date +%s) - start) )); [ "$l" -lt 5 ] && l=5; echo "$l"; }
timeout 130 python3 -m pytest -q -m gpu tests/gpu/test_estimation_skew_gpu.py tests/gpu/test_topk_gpu.py \
    tests/gpu/test_prefill_gpu.py tests/gpu/test_block_sparse_gpu.py tests/gpu/test_vertical_slash_attention_gpu.py -k "block or attention or paths or skew or topk or threshold or k512 or odd or varlen or vertical or flex or window or select or method" > "$LOG/gpu_tests.log" 2>&1
echo "gpu tests rc=$? ($(( $(date +%s) - start )) s)"; grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/gpu_tests.log" | tail -n 8
cd benchmarks
timeout 50 python3 profile_select_kernels.py --lengths 131072 --trace-dir "$LOG" > "$LOG/select_kernels.log" 2>&1
echo "select rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^## |  timeline|    [0-9.]+ ms idle" "$LOG/select_kernels.log" | cut -c1-160
timeout "$(left 230)" python3 bench_prefill.py --methods vertical_slash flexprefill --lengths 65536 131072 --json "$LOG/bench.json" > "$LOG/bench.log" 2>&1
echo "bench rc=$? ($(( $(date +%s) - start )) s)"
sed -n '/^### /,$p' "$LOG/bench.log" | grep -v "^$" | head -n 30
