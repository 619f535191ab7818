#!/usr/bin/env bash
# Session 8, third call (one H200): GPU tests of the changed paths, select profile, VS / FlexPrefill 64K-128K,
# radix top-k launch sweep, and (if present) an Nsight Compute probe of the sums pass.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/s8c; mkdir -p "$LOG"
timeout 170 python3 -m pytest -q -m gpu tests/gpu/test_prefill_gpu.py tests/gpu/test_topk_gpu.py \
    tests/gpu/test_estimation_skew_gpu.py tests/gpu/test_vertical_slash_attention_gpu.py > "$LOG/gpu_tests.log" 2>&1
echo "tests rc=$?"; tail -3 "$LOG/gpu_tests.log"
cd benchmarks
timeout 90 python3 profile_select_kernels.py --lengths 131072 > "$LOG/select_kernels.log" 2>&1
echo "profile rc=$?"; grep -v Warn "$LOG/select_kernels.log" | cut -c1-150 | head -22
timeout 150 python3 bench_prefill.py --methods vertical_slash flexprefill --lengths 65536 131072 \
    --json "$LOG/bench.json" > "$LOG/bench.log" 2>&1
echo "bench rc=$?"; grep -v "^\s*$" "$LOG/bench.log" | cut -c1-220 | tail -16
timeout 70 python3 results/s8/topk_sweep.py > "$LOG/topk_sweep.log" 2>&1
echo "topk rc=$?"; cut -c1-120 "$LOG/topk_sweep.log"
which ncu > "$LOG/ncu.txt" 2>&1; ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute* >> "$LOG/ncu.txt" 2>&1
cat "$LOG/ncu.txt"
