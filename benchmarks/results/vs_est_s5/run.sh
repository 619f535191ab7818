#!/usr/bin/env bash
# vs_est_s5: GPU correctness + timing of the skew last-window sums variants (one H200, <= 150 s).
# Run from the repository root:  bash benchmarks/results/vs_est_s5/run.sh
# Logs (2 files) go to $OUT/vs_est_s5/: gpu_tests.log, sums_compare.log; stdout gets the test summary and the table.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/vs_est_s5
mkdir -p "$LOG"
start=$(date +%s)
python3 -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__)"

# 0. compile every configuration below in parallel processes (Triton disk cache), so the timed steps do not compile
timeout 60 python3 benchmarks/results/vs_est_s5/warm_cache.py 16 2>&1 | tail -n 18
echo "warm cache: ($(( $(date +%s) - start )) s)"

# 1. correctness at real shapes (32 q / 8 KV heads, hd 128, bf16): every skew variant (and ring sizes NQ 1/2/4 of the
#    pipelined one) vs the fp32 reference and the banded pass, determinism, NaN-poisoned rows; plus the existing
#    default-path sums test. Also warms the Triton cache for the timing below.
timeout 60 python3 -m pytest -q -m gpu tests/gpu/test_estimation_skew_gpu.py \
    "tests/gpu/test_prefill_gpu.py::test_last_window_sums_match_reference" > "$LOG/gpu_tests.log" 2>&1
echo "gpu tests: rc=$? $(tail -n 1 "$LOG/gpu_tests.log")  ($(( $(date +%s) - start )) s)"
grep -E "^(FAILED|ERROR)|Error" "$LOG/gpu_tests.log" | head -n 12

# 2. timing: banded vs the skew variants at 16K..128K (sums at windows 256 / 512, library select + index, overhead %
#    of the VS attention), plus a launch sweep (sums only) and the row-statistics launches at 128K
cd benchmarks
left=$(( 148 - ($(date +%s) - start) )); [ "$left" -lt 5 ] && left=5  # (timeout 0 would mean no limit)
timeout "$left" python3 bench_prefill.py --lengths 16384 32768 65536 131072 \
    --sums-compare banded skew skew_pipe skew_gather \
    --sums-sweep skew_pipe:4,8,2,1 skew_pipe:2,8,2,1 skew_pipe:1,8,2,1 skew_gather:2,8,2,1 skew_gather:4,8,2,0 \
                 skew_gather:4,16,2,1 skew:2,8,2,1 \
    > "$LOG/sums_compare.log" 2>&1
echo "sums compare: rc=$?  ($(( $(date +%s) - start )) s)"
if grep -q "^### last-window sums variants" "$LOG/sums_compare.log"; then
    sed -n '/^### last-window sums variants/,$p' "$LOG/sums_compare.log"
else  # timed out before the table: the rows measured so far
    grep -E '^(== L|  \{)' "$LOG/sums_compare.log" | cut -c1-400
fi
grep -E "^  stats L=" "$LOG/sums_compare.log"
grep -E "Error|error\"" "$LOG/sums_compare.log" | head -n 8
