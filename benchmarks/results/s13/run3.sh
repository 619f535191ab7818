#!/bin/bash
# Session 13, device call 3 (the shipped code: column runs reverted, cuDNN-length padding kept): the VS kernel GPU
# tests again (call 2 ran them on the column-runs kernel), the dense GPU tests, and the padding cost / saving.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call3}; mkdir -p $L
timeout 150 python -m pytest -q -m gpu tests/gpu/test_vertical_slash_attention_gpu.py tests/gpu/test_prefill_gpu.py \
  -k "every_key or paths_real or dense or causal_sdpa" tests/gpu/test_transformers_decode_gpu.py 2>&1 | tail -4 \
  > $L/gpu_tests.log
cat $L/gpu_tests.log
timeout 200 python benchmarks/results/s13/padding_cost.py 2>&1 | grep -v Warn | tee $L/padding_cost.log
