#!/usr/bin/env bash
# Session 10 device call 6: the Gluon kernel's default work order becomes the causal one (last query tile first,
# computed in the kernel; no device argsort per call); dict(sorted=True) keeps the count-sorted order. Smoke test,
# every block-sparse GPU test, Gluon (causal / sorted) vs TMA at 16K-128K, then the prefill table again.
# Logs in $OUT/call6/.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/call6; mkdir -p "$LOG"
start=$(date +%s)
timeout 80 python3 benchmarks/results/s10/smoke.py > "$LOG/smoke.log" 2>&1
echo "smoke rc=$? ($(( $(date +%s) - start )) s)"; tail -n 10 "$LOG/smoke.log" | cut -c1-300
grep -q "rel-RMSE" "$LOG/smoke.log" || exit 0
timeout 150 python3 benchmarks/results/s10/gluon_bench.py --passes 2 --rep 100 --variants tma gluon gluon_sorted \
    --cases 128:16384:0.035 128:16384:0.1 128:32768:0.1 128:131072:0.035 128:131072:0.1 > "$LOG/gluon_bench.log" 2>&1
echo "gluon bench rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^##|^\||FAIL" "$LOG/gluon_bench.log" | grep -v "^|---" | cut -c1-200
timeout 130 python3 -m pytest -q -m gpu tests/gpu/test_block_sparse_gpu.py tests/gpu/test_prefill_gpu.py -k "block_sparse or gluon" > "$LOG/gpu_tests.log" 2>&1
echo "gpu tests rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/gpu_tests.log" | tail -n 12 | cut -c1-300
timeout 120 python3 benchmarks/bench_prefill.py --chunks 128 --methods dense block_sparse \
    --lengths 16384 32768 65536 131072 --json "$LOG/bench.json" > "$LOG/bench.log" 2>&1
echo "bench rc=$? ($(( $(date +%s) - start )) s)"
sed -n '/^### block/,$p' "$LOG/bench.log" | grep -v "^$" | cut -c1-220 | head -n 30
