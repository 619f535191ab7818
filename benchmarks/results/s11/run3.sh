#!/bin/bash
# Session 11, device call 3: on the shipped code (gather kernel with scalar
# index loads, per-row Triton selection) - the GPU tests, the probe and the Transformers rows.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call3}; mkdir -p $L
timeout 40 python -m pytest -q -m gpu tests/gpu/test_block_sparse_gpu.py -k small_chunks \
  2>&1 | tail -15 > $L/gpu_tests.log
cat $L/gpu_tests.log
timeout 80 python benchmarks/results/s11/probe_bs16.py --lengths 131072 2>&1 | tee $L/probe_bs16.log
timeout 60 python benchmarks/bench_transformers.py --no-check --lengths 131072 --methods sdpa block_sparse \
  --json $L/bench_transformers.json 2>&1 | tail -12 > $L/bench_transformers.log
cat $L/bench_transformers.log
