#!/bin/bash
# Session 12, device call 3: Quest selection one bit per round with early stop (vs call 2's two bits and session
# 11's), block_sparse row top-k ranking ties only when there are ties (vs call 1's); GPU tests (incl. the Quest
# cache step without host syncs); the Quest table at 128K, Transformers decode rows, block_sparse defaults at 128K.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call3}; mkdir -p $L
timeout 90 python -m pytest -q -m gpu tests/gpu/test_decode_gpu.py tests/gpu/test_block_sparse_gpu.py \
  -k "quest or selection_equals or small_chunks" 2>&1 | tail -15 > $L/gpu_tests.log
cat $L/gpu_tests.log
timeout 80 python benchmarks/results/s12/quest_probe.py --contexts 32768 131072 2>&1 | tee $L/quest_probe.log
timeout 100 python benchmarks/results/s12/topk_probe.py --lengths 32768 131072 2>&1 | grep -v Warn | tee $L/topk.log
timeout 90 python benchmarks/bench_decode.py --tables quest --contexts 131072 --batches 1 8 --no-flex \
  --json $L/bench_decode.json 2>&1 | tail -12 > $L/bench_decode.log
cat $L/bench_decode.log
timeout 110 python benchmarks/bench_transformers.py --no-check --lengths 131072 --methods sdpa block_sparse quest \
  --json $L/bench_transformers.json 2>&1 | tail -8 > $L/bench_transformers.log
cat $L/bench_transformers.log
timeout 100 python benchmarks/bench_prefill.py --methods block_sparse_defaults --lengths 131072 \
  --json $L/bench_defaults.json 2>&1 | tee $L/bench_defaults.log | tail -6
