#!/usr/bin/env bash
# Session 9, fourth device call (one H200): block_sparse grid order (bs_order.py: group-major vs head-major), the
# block_sparse GPU tests with group-major (the default of that experimental code, removed after), Nsight Compute of the group-major kernel at 128K, then
# the block_sparse / dense table at 64K / 128K. Logs in $OUT/s9d/ (copied to benchmarks/results/s9/logs/call4/).
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/s9d; mkdir -p "$LOG"
start=$(date +%s)
python3 -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"
timeout 150 python3 benchmarks/results/s9/bs_order.py > "$LOG/bs_order.log" 2>&1
echo "bs_order rc=$? ($(( $(date +%s) - start )) s)"; grep -E "^##|^\||check|FAIL" "$LOG/bs_order.log" | cut -c1-150
timeout 100 python3 -m pytest -q -m gpu -p no:cacheprovider tests/gpu/test_block_sparse_gpu.py tests/gpu/test_prefill_gpu.py \
    > "$LOG/gpu_tests.log" 2>&1
echo "gpu tests rc=$? ($(( $(date +%s) - start )) s)"; grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/gpu_tests.log" | tail -n 8
timeout 100 /usr/local/cuda/bin/ncu --kernel-name regex:_block_sparse_fwd_tma --launch-skip 1 --launch-count 2 \
    --section SpeedOfLight --section Occupancy --section WarpStateStats --section MemoryWorkloadAnalysis \
    python3 benchmarks/results/s9/ncu_block_sparse.py > "$LOG/ncu_block_sparse.log" 2>&1
echo "ncu rc=$? ($(( $(date +%s) - start )) s)"
grep -n "Duration\|L2 Hit Rate\|DRAM Throughput\|No Eligible\|==ERROR==" "$LOG/ncu_block_sparse.log" | head -20
(cd benchmarks && timeout 150 python3 bench_prefill.py --chunks 128 --methods dense block_sparse --lengths 65536 131072 \
    --json "$LOG/bench.json" > "$LOG/bench.log" 2>&1)
echo "bench rc=$? ($(( $(date +%s) - start )) s)"
sed -n '/^### /,$p' "$LOG/bench.log" | grep -v "^$" | cut -c1-200 | head -n 24
