#!/bin/bash
# Session 15, device call 3: the scores kernel's load mask (reserved pages), the decode and Transformers-decode GPU
# tests on the final kernels (8-warp selection default, masked metadata loads), the 128K Quest rows once more.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call3}; mkdir -p $L
(nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv; python -c "import torch, triton, transformers;
print(torch.__version__, triton.__version__, transformers.__version__, torch.backends.cudnn.version())") > $L/env.txt
cat $L/env.txt
timeout 120 python benchmarks/results/s15/reserved_pages_probe.py 2>&1 | grep -v Warn | tee $L/reserved_pages.log
timeout 150 python -m pytest -q -m gpu tests/gpu/test_decode_gpu.py tests/gpu/test_transformers_decode_gpu.py \
  2>&1 | tail -3 | tee $L/gpu_tests.log
timeout 200 python benchmarks/bench_decode.py --tables quest --contexts 131072 --batches 1 8 --no-flex \
  --json $L/quest.json 2>&1 | grep -v Warn > $L/bench_quest.log
grep "^| 128K" $L/bench_quest.log | cut -c1-150
