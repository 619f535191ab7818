#!/usr/bin/env bash
# Session 10 device call 5 (final): every block-sparse GPU test on the shipped code (Gluon default), the prefill
# table (dense + block_sparse chunk 128, 16K-128K; bench_prefill now passes max_seqlen as the library does), and
# three interleaved passes Gluon vs TMA at the three target cases. Logs in $OUT/call5/.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/call5; mkdir -p "$LOG"
start=$(date +%s)
python3 -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"
timeout 200 python3 -m pytest -q -m gpu tests/gpu/test_block_sparse_gpu.py tests/gpu/test_prefill_gpu.py -k "block_sparse or gluon" > "$LOG/gpu_tests.log" 2>&1
echo "gpu tests rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/gpu_tests.log" | tail -n 12 | cut -c1-300
timeout 200 python3 benchmarks/bench_prefill.py --chunks 128 --methods dense block_sparse \
    --lengths 16384 32768 65536 131072 --json "$LOG/bench.json" > "$LOG/bench.log" 2>&1
echo "bench rc=$? ($(( $(date +%s) - start )) s)"
sed -n '/^### /,$p' "$LOG/bench.log" | grep -v "^$" | cut -c1-220 | head -n 30
grep "FAIL" "$LOG/bench.log" | head -3
timeout 150 python3 benchmarks/results/s10/gluon_bench.py --passes 3 --rep 200 --variants tma gluon \
    > "$LOG/gluon_bench.log" 2>&1
echo "gluon bench rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^##|^\||FAIL" "$LOG/gluon_bench.log" | grep -v "^|---" | cut -c1-200
