#!/bin/bash
# Session 12, device call 4: the shipped code (Quest selection back to the unrolled 32-step search + the -0.0 fix,
# block_sparse top-k = call 1's): GPU tests, the Quest table at 128K, and the DynamicCache decode probe.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call4}; mkdir -p $L
timeout 90 python -m pytest -q -m gpu tests/gpu/test_decode_gpu.py tests/gpu/test_block_sparse_gpu.py \
  -k "quest or selection_equals" 2>&1 | tail -8 > $L/gpu_tests.log
cat $L/gpu_tests.log
timeout 90 python benchmarks/bench_decode.py --tables quest --contexts 131072 --batches 1 8 --no-flex \
  --json $L/bench_decode.json 2>&1 | tail -12 > $L/bench_decode.log
cat $L/bench_decode.log
timeout 60 python benchmarks/results/s12/decode_probe.py 2>&1 | tee $L/decode_probe.log
PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True timeout 60 python benchmarks/results/s12/decode_probe.py \
  2>&1 | tee $L/decode_probe_expandable.log
