#!/usr/bin/env bash
# Session 9 device call 2 (one H200, <= $LIMIT s, default 300): session 8's planned final call, run with
# benchmarks/results/s9/paired_topk.patch applied (the paired VS top-k, dropped after): GPU tests of the estimation /
# index / top-k paths, the VS / FlexPrefill select breakdown, VS / FlexPrefill at 128K (attention and select in one
# run), then, while time is left, the prefill table of every method at 64K and 128K and the other GPU tests.
# Logs in $OUT/s9b/.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/s9b; mkdir -p "$LOG"
start=$(date +%s)
LIMIT=${LIMIT:-300}
left() { local l=$(( $1 - ($(date +%s) - start) )); [ "$l" -lt 5 ] && l=5; echo "$l"; }
python3 -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"
CHANGED="tests/gpu/test_topk_gpu.py tests/gpu/test_estimation_skew_gpu.py tests/gpu/test_prefill_gpu.py tests/gpu/test_vertical_slash_attention_gpu.py tests/gpu/test_coverage_gpu.py"
timeout 150 python3 -m pytest -q -m gpu $CHANGED > "$LOG/gpu_tests_changed.log" 2>&1
echo "changed-path gpu tests rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/gpu_tests_changed.log" | tail -n 8
cd benchmarks
timeout 60 python3 profile_select_kernels.py --lengths 131072 > "$LOG/select_kernels.log" 2>&1
echo "select rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^## " "$LOG/select_kernels.log" | cut -c1-160
grep -A8 "^| kernel" "$LOG/select_kernels.log" | cut -c1-110
timeout "$(left $((LIMIT * 2 / 3)))" python3 bench_prefill.py --methods vertical_slash flexprefill --lengths 131072 \
    --json "$LOG/bench_vs.json" > "$LOG/bench_vs.log" 2>&1
echo "bench vs rc=$? ($(( $(date +%s) - start )) s)"
sed -n '/^### v/,$p' "$LOG/bench_vs.log" | grep -v "^$" | cut -c1-200 | head -n 12
timeout "$(left $((LIMIT * 5 / 6)))" python3 bench_prefill.py --chunks 128 --methods dense block_sparse \
    --lengths 65536 131072 --json "$LOG/bench.json" > "$LOG/bench.log" 2>&1
echo "bench rc=$? ($(( $(date +%s) - start )) s)"
sed -n '/^### /,$p' "$LOG/bench.log" | grep -v "^$" | cut -c1-200 | head -n 24
cd ..
OTHERS=$(ls tests/gpu/test_*.py | grep -v -e estimation_skew -e prefill_gpu -e topk_gpu -e vertical_slash_attention -e coverage)
timeout "$(left $LIMIT)" python3 -m pytest -q -m gpu $OTHERS > "$LOG/gpu_tests_others.log" 2>&1
echo "other gpu tests rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/gpu_tests_others.log" | tail -n 8
