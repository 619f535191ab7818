#!/bin/bash
# Session 13, device call 2: the cuDNN-length padding of dense prefill (kernels/dense.causal_sdpa) and the column
# runs of the vertical-slash kernel (COLUMN_RUNS): GPU tests of both, the probes, the VS / FlexPrefill rows at 128K.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call2}; mkdir -p $L
timeout 240 python -m pytest -q -m gpu tests/gpu/test_prefill_gpu.py tests/gpu/test_vertical_slash_attention_gpu.py \
  tests/gpu/test_transformers_decode_gpu.py 2>&1 | tail -15 > $L/gpu_tests.log
cat $L/gpu_tests.log
timeout 150 python benchmarks/results/s13/vs_runs_probe.py 2>&1 | grep -v Warn | tee $L/vs_runs.log
timeout 60 python benchmarks/results/s13/prefill_cudnn_probe.py 2>&1 | grep -v Warn | tail -10 | tee $L/prefill_cudnn.log
timeout 120 python benchmarks/bench_prefill.py --methods vertical_slash flexprefill --lengths 131072 \
  --json $L/bench_vs.json 2>&1 | tee $L/bench_vs.log | tail -25
