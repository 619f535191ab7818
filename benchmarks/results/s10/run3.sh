#!/usr/bin/env bash
# Session 10 device call 3: the Gluon kernel as path="auto"'s choice (head dim 128, chunk % 128 == 0 on Hopper).
# Every block-sparse GPU test (Gluon real shapes included; test_prefill_gpu's block_sparse tests now run Gluon),
# then the prefill table (dense + block_sparse, chunk 128, 16K-128K) with cuDNN / flash / Flex same mask in the same
# run. Logs in $OUT/call3/.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/call3; mkdir -p "$LOG"
start=$(date +%s)
python3 -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"
timeout 230 python3 -m pytest -q -m gpu tests/gpu/test_block_sparse_gpu.py tests/gpu/test_prefill_gpu.py -k "block_sparse or gluon" > "$LOG/gpu_tests.log" 2>&1
echo "gpu tests rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^(FAILED|ERROR)|passed|failed" "$LOG/gpu_tests.log" | tail -n 12 | cut -c1-300
timeout 300 python3 benchmarks/bench_prefill.py --chunks 128 --methods dense block_sparse \
    --lengths 16384 32768 65536 131072 --json "$LOG/bench.json" > "$LOG/bench.log" 2>&1
echo "bench rc=$? ($(( $(date +%s) - start )) s)"
sed -n '/^### /,$p' "$LOG/bench.log" | grep -v "^$" | cut -c1-220 | head -n 30
grep -c "OK" "$LOG/bench.log"; grep "FAIL" "$LOG/bench.log" | head -3
