#!/bin/bash
# Session 15, device call 2: the Quest table at 16K-128K with the library's combine rule (auto), the selection probe
# again (another machine's numbers), and the whole GPU test suite on the session's code.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call2}; mkdir -p $L
(nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv; python -c "import torch, triton, transformers;
print(torch.__version__, triton.__version__, transformers.__version__, torch.backends.cudnn.version())") > $L/env.txt
cat $L/env.txt
timeout 200 python benchmarks/bench_decode.py --tables quest --batches 1 8 --no-flex \
  --json $L/quest.json 2>&1 | grep -v Warn > $L/bench_quest.log
grep "^| [0-9]*K" $L/bench_quest.log | cut -c1-150
timeout 100 python benchmarks/results/s15/select_probe.py 2>&1 | grep -v Warn | tee $L/select_probe.log | cut -c1-150
timeout 280 python -m pytest -q -m gpu tests/gpu 2>&1 | tail -6 | tee $L/gpu_tests.log
