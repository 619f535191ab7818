#!/usr/bin/env bash
# Session 9, fifth device call (one H200; 06:27 UTC), with benchmarks/results/s9/paired_topk.patch applied (plus the int64 fix
# for a specialised half_rows): the paired VS top-k launch sweep, the top-k / prefill GPU tests, the VS select
# profile. Logs in $OUT/s9e/ (copied to benchmarks/results/s9/logs/call5/).
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/s9e; mkdir -p "$LOG"
start=$(date +%s)
(cd benchmarks && timeout 120 python3 results/s9/topk_pair_sweep.py > "$LOG/topk_pair_sweep.log" 2>&1)
echo "sweep rc=$? ($(( $(date +%s) - start )) s)"; grep -v Warn "$LOG/topk_pair_sweep.log" | cut -c1-230
timeout 110 python3 -m pytest -q -m gpu -p no:cacheprovider tests/gpu/test_topk_gpu.py tests/gpu/test_prefill_gpu.py \
    > "$LOG/gpu_tests.log" 2>&1
echo "gpu tests rc=$? ($(( $(date +%s) - start )) s)"; grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/gpu_tests.log" | tail -n 8
(cd benchmarks && timeout 60 python3 profile_select_kernels.py --lengths 131072 > "$LOG/select_kernels.log" 2>&1)
echo "profile rc=$? ($(( $(date +%s) - start )) s)"; grep -E "^## " "$LOG/select_kernels.log" | cut -c1-120
grep -A8 "^| kernel" "$LOG/select_kernels.log" | head -9 | cut -c1-100
