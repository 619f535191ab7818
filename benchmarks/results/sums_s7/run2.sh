#!/usr/bin/env bash
# Session 7, second call (one H200, <= 330 s): GPU tests of the changed paths, the join2 experiment, the select
# breakdown with host seq_lens (profile_select_kernels.py), the VS / FlexPrefill rows at 128K (bench_prefill.py).
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/sums_s7b; mkdir -p "$LOG"
start=$(date +%s)
left() { local l=$(( $1 - ($(date +%s) - start) )); [ "$l" -lt 5 ] && l=5; echo "$l"; }
timeout 110 python3 -m pytest -q -m gpu tests/gpu/test_estimation_skew_gpu.py tests/gpu/test_prefill_gpu.py -x \
    -k "skew or vertical or flex or block or dense or select or window" > "$LOG/gpu_tests.log" 2>&1
echo "gpu tests rc=$? ($(( $(date +%s) - start )) s)"; grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/gpu_tests.log" | tail -n 6
cd benchmarks
timeout 45 python3 results/sums_s7/sweep.py --only join2 > "$LOG/join2.log" 2>&1
echo "join2 rc=$? ($(( $(date +%s) - start )) s)"; grep -E "window|default|ablation" "$LOG/join2.log"
timeout 60 python3 profile_select_kernels.py --lengths 131072 --trace-dir "$LOG" > "$LOG/select_kernels.log" 2>&1
echo "select rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^## |do_bench|host|  timeline|    [0-9.]+ ms idle" "$LOG/select_kernels.log" | cut -c1-160 | head -n 30
timeout "$(left 320)" python3 bench_prefill.py --methods vertical_slash flexprefill --lengths 131072 --json "$LOG/bench.json" > "$LOG/bench.log" 2>&1
echo "bench rc=$? ($(( $(date +%s) - start )) s)"
sed -n '/^### /,$p' "$LOG/bench.log" | grep -v "^$" | head -n 30
