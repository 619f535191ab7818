#!/bin/bash
# Session 11, device call 1: block_sparse at the reference defaults (chunk 16, top 64): GPU tests of the gather
# kernel, where the time goes (probe), and the Transformers end-to-end rows.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call1}; mkdir -p $L
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $L/env.txt
python -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, torch.backends.cudnn.version(), transformers.__version__)" >> $L/env.txt
timeout 100 python -m pytest -q -m gpu tests/gpu/test_block_sparse_gpu.py -k small_chunks \
  "tests/gpu/test_prefill_gpu.py::test_block_sparse_real_shapes" 2>&1 | tail -15 > $L/gpu_tests.log
timeout 330 python benchmarks/results/s11/probe_bs16.py --flex --lengths 32768 131072 2>&1 | tee $L/probe_bs16.log
timeout 140 python benchmarks/bench_transformers.py --no-check --lengths 32768 131072 --methods sdpa block_sparse \
  --json $L/bench_transformers.json 2>&1 | tail -30 > $L/bench_transformers.log
cat $L/gpu_tests.log $L/bench_transformers.log
