#!/bin/bash
# Session 11, device call 1: block_sparse at the reference defaults (chunk 16, top 64) - where the time goes.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
mkdir -p $OUT/call1
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $OUT/call1/env.txt
python -c "import torch, triton; print(torch.__version__, triton.__version__, torch.backends.cudnn.version())" >> $OUT/call1/env.txt
timeout 420 python benchmarks/results/s11/probe_bs16.py --lengths 32768 131072 2>&1 | tee $OUT/call1/probe_bs16.log
