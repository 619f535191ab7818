#!/usr/bin/env bash
# Session 8 final device call (one H200, <= 560 s): the VS / FlexPrefill select breakdown, the full prefill table (dense, block_sparse chunk 128, vertical_slash,
# flexprefill at 16K-128K, library defaults), and every GPU test. Logs in $OUT/final_s8/.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/final_s8; mkdir -p "$LOG"
start=$(date +%s)
left() { local l=$(( $1 - ($(date +%s) - start) )); [ "$l" -lt 5 ] && l=5; echo "$l"; }
python3 -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"
cd benchmarks
timeout 70 python3 profile_select_kernels.py --lengths 131072 --trace-dir "$LOG" > "$LOG/select_kernels.log" 2>&1
echo "select rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^## |  timeline" "$LOG/select_kernels.log" | cut -c1-160
grep -A8 "^| kernel" "$LOG/select_kernels.log" | cut -c1-110
timeout "$(left 400)" python3 bench_prefill.py --chunks 128 --json "$LOG/bench.json" > "$LOG/bench.log" 2>&1
echo "bench rc=$? ($(( $(date +%s) - start )) s)"
sed -n '/^### /,$p' "$LOG/bench.log" | grep -v "^$" | cut -c1-200 | head -n 40
grep -E "Error|error|FAIL" "$LOG/bench.log" | head -n 5
cd ..
timeout "$(left 555)" python3 -m pytest -q -m gpu tests/gpu > "$LOG/gpu_tests.log" 2>&1
echo "gpu tests rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/gpu_tests.log" | tail -n 15
