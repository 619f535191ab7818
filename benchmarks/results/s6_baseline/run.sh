#!/usr/bin/env bash
# Session 6 baseline on the lent GPU: block_sparse + VS/Flex select breakdown + ncu of the hot kernels (<= 300 s).
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/s6_baseline; mkdir -p "$LOG"
start=$(date +%s)
python3 -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
echo "ncu: ${NCU:-none}"; nvidia-smi --query-gpu=name,clocks.max.sm,power.limit --format=csv,noheader
cd benchmarks
timeout 110 python3 profile_select_kernels.py --lengths 131072 > "$LOG/select_kernels.log" 2>&1
echo "select kernels rc=$? ($(( $(date +%s) - start )) s)"; cat "$LOG/select_kernels.log" | cut -c1-200
timeout 150 python3 bench_prefill.py --methods block_sparse --chunks 128 --lengths 32768 131072 > "$LOG/block_sparse.log" 2>&1
echo "block_sparse rc=$? ($(( $(date +%s) - start )) s)"; sed -n '/^###/,$p' "$LOG/block_sparse.log" | head -n 30
grep -E '^  \{' "$LOG/block_sparse.log" | cut -c1-400
if [ -n "${NCU:-}" ]; then
  for what in block select; do
    left=$(( 290 - ($(date +%s) - start) )); [ "$left" -lt 10 ] && break
    timeout "$left" "$NCU" --target-processes all -k "regex:_block_sparse_fwd_tma|_window_sums|_row_stat|radix|topk|sort|index" \
      --launch-skip 0 --launch-count 12 --section SpeedOfLight --section WarpStateStats --section Occupancy \
      --section LaunchStats --section MemoryWorkloadAnalysis python3 ../benchmarks/results/s6_baseline/ncu_driver.py $what \
      > "$LOG/ncu_$what.log" 2>&1
    echo "ncu $what rc=$? ($(( $(date +%s) - start )) s)"
  done
fi
