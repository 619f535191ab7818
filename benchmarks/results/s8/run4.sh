#!/usr/bin/env bash
# Session 8, fourth call (one H200): top-k GPU tests and select profile with the new top-k launch, then Nsight
# Compute on the three largest VS estimation kernels.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/s8d; mkdir -p "$LOG"
timeout 100 python3 -m pytest -q -m gpu tests/gpu/test_topk_gpu.py tests/gpu/test_coverage_gpu.py > "$LOG/gpu_tests.log" 2>&1
echo "tests rc=$?"; tail -3 "$LOG/gpu_tests.log"
cd benchmarks
timeout 90 python3 profile_select_kernels.py --lengths 131072 > "$LOG/select_kernels.log" 2>&1
echo "profile rc=$?"; grep -v Warn "$LOG/select_kernels.log" | cut -c1-150 | head -14
timeout 240 /usr/local/cuda/bin/ncu --kernel-name "regex:_window_sums_skew|_window_stats|_build_index" \
    --launch-count 3 --section SpeedOfLight --section Occupancy --section LaunchStats --section WarpStateStats \
    --section SchedulerStats --section InstructionStats --section ComputeWorkloadAnalysis \
    --section MemoryWorkloadAnalysis --section SourceCounters \
    python3 results/s8/ncu_target.py > "$LOG/ncu.log" 2>&1
echo "ncu rc=$?"; wc -l "$LOG/ncu.log"; grep -n "Duration\|Registers Per\|Achieved Occupancy\|Issue Slots Busy\|No Eligible\|Warp Cycles Per Issued\|Compute (SM) Throughput\|Memory Throughput\|Executed Instructions  \|==PROF==\|Error\|ERR" "$LOG/ncu.log" | head -60
