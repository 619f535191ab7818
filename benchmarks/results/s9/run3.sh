#!/usr/bin/env bash
# Session 9, third device call (one H200), on main (no experiment applied): the GPU tests of the estimation / top-k /
# VS paths, VS / FlexPrefill at 128K (attention and select in one run), then Nsight Compute on the block_sparse
# kernel at 128K, p = 0.035 and p = 0.1. Logs in $OUT/s9c/ (copied to benchmarks/results/s9/logs/call3/).
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/s9c; mkdir -p "$LOG"
start=$(date +%s)
python3 -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"
CHANGED="tests/gpu/test_topk_gpu.py tests/gpu/test_estimation_skew_gpu.py tests/gpu/test_prefill_gpu.py tests/gpu/test_vertical_slash_attention_gpu.py tests/gpu/test_coverage_gpu.py"
timeout 150 python3 -m pytest -q -m gpu -p no:cacheprovider $CHANGED > "$LOG/gpu_tests.log" 2>&1
echo "gpu tests rc=$? ($(( $(date +%s) - start )) s)"; grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/gpu_tests.log" | tail -n 8
(cd benchmarks && timeout 120 python3 bench_prefill.py --methods vertical_slash flexprefill --lengths 131072 \
    --json "$LOG/bench_vs.json" > "$LOG/bench_vs.log" 2>&1)
echo "bench vs rc=$? ($(( $(date +%s) - start )) s)"
sed -n '/^### v/,$p' "$LOG/bench_vs.log" | grep -v "^$" | cut -c1-200 | head -n 12
timeout 200 /usr/local/cuda/bin/ncu --kernel-name regex:_block_sparse_fwd_tma --launch-skip 1 --launch-count 3 \
    --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    python3 benchmarks/results/s9/ncu_block_sparse.py > "$LOG/ncu_block_sparse.log" 2>&1
echo "ncu rc=$? ($(( $(date +%s) - start )) s)"; wc -l "$LOG/ncu_block_sparse.log"
grep -n "_block_sparse_fwd_tma\|Duration\|Achieved Occupancy\|Issue Slots Busy\|No Eligible\|Warp Cycles Per Issued\|Compute (SM) Throughput\|Memory Throughput\|L2 Hit Rate\|DRAM Throughput\|L1/TEX Hit\|==PROF==\|==ERROR==" "$LOG/ncu_block_sparse.log" | head -60
