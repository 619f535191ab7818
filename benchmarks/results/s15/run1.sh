#!/bin/bash
# Session 15, device call 1: the new Quest page selection against session 14's (same run), the issue-4 Quest table
# at 128K, and the decode GPU tests.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call1}; mkdir -p $L
(nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv; python -c "import torch, triton, transformers;
print(torch.__version__, triton.__version__, transformers.__version__, torch.backends.cudnn.version())") > $L/env.txt
cat $L/env.txt
timeout 150 python benchmarks/results/s15/select_probe.py 2>&1 | grep -v Warn | tee $L/select_probe.log
timeout 200 python benchmarks/bench_decode.py --tables quest --contexts 131072 --batches 1 8 --no-flex \
  --json $L/quest.json 2>&1 | grep -v Warn > $L/bench_quest.log
grep "^| 128K" $L/bench_quest.log | cut -c1-200
timeout 200 python -m pytest -q -m gpu tests/gpu/test_decode_gpu.py 2>&1 | tail -5 | tee $L/gpu_tests.log
