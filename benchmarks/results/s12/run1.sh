#!/bin/bash
# Session 12, device call 1: the block_sparse row top-k with early stop and two row segments. GPU tests of the
# selection (== torch entry for entry) and the small-chunk path, same-run old vs new select (topk_probe.py), the
# bench_prefill block_sparse_defaults table at 16K-128K, and the Transformers rows of every method.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call1}; mkdir -p $L
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv > $L/env.txt
python -c "import torch, triton, transformers; print(torch.__version__, triton.__version__, torch.backends.cudnn.version(), transformers.__version__)" >> $L/env.txt
timeout 100 python -m pytest -q -m gpu tests/gpu/test_block_sparse_gpu.py -k "selection_equals or small_chunks" \
  2>&1 | tail -15 > $L/gpu_tests.log
cat $L/gpu_tests.log
timeout 100 python benchmarks/results/s12/topk_probe.py --lengths 32768 131072 2>&1 | tee $L/topk_probe.log
timeout 200 python benchmarks/bench_prefill.py --methods block_sparse_defaults --lengths 16384 32768 65536 131072 \
  --json $L/bench_defaults.json 2>&1 | tee $L/bench_defaults.log | tail -12
timeout 150 python benchmarks/bench_transformers.py --no-check --lengths 32768 131072 \
  --json $L/bench_transformers.json 2>&1 | tail -30 > $L/bench_transformers.log
cat $L/bench_transformers.log
timeout 80 python benchmarks/bench_decode.py --tables quest --contexts 131072 --batches 1 8 --no-flex \
  --json $L/bench_decode.json 2>&1 | tail -20 > $L/bench_decode.log
cat $L/bench_decode.log
