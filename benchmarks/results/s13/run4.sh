#!/bin/bash
# Session 13, device call 4: the shipped padding policy (pad until a shape's copies cost about one cuDNN plan):
# GPU tests of the dense paths, and padding_cost.py (forced-padding cost, Transformers 8 layers, one length met
# again and again).
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call4}; mkdir -p $L
timeout 100 python -m pytest -q -m gpu tests/gpu/test_prefill_gpu.py tests/gpu/test_transformers_decode_gpu.py \
  -k "dense or causal_sdpa" 2>&1 | tail -3 > $L/gpu_tests.log
cat $L/gpu_tests.log
timeout 200 python benchmarks/results/s13/padding_cost.py 2>&1 | grep -v Warn | tee $L/padding_cost.log
