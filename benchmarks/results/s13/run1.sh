#!/bin/bash
# Session 13, device call 1: the whole GPU test suite on main (session 12's cuDNN-free dense decode step was never
# run on a GPU), the DynamicCache decode backends at 128K, Transformers dense vs sdpa decode, and the cuDNN
# prefill plan cost for new lengths.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call1}; mkdir -p $L
(nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv; python -c "import torch, triton, transformers;
print(torch.__version__, triton.__version__, transformers.__version__, torch.backends.cudnn.version())") > $L/env.txt
cat $L/env.txt
timeout 240 python -m pytest -q -m gpu tests/gpu 2>&1 | tail -15 > $L/gpu_tests.log
cat $L/gpu_tests.log
timeout 100 python benchmarks/results/s12/decode_backend.py 2>&1 | grep -v Warn | tee $L/decode_backend.log
timeout 100 python benchmarks/results/s13/prefill_cudnn_probe.py 2>&1 | grep -v Warn | tee $L/prefill_cudnn.log
timeout 120 python benchmarks/bench_transformers.py --no-check --lengths 131072 --methods sdpa dense vertical_slash \
  --json $L/bench_transformers.json 2>&1 | tail -8 > $L/bench_transformers.log
cat $L/bench_transformers.log
