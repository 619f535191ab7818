#!/bin/bash
# Session 12, device call 2: Quest page scores as two dot products per page, page selection two bits per round
# with early stop. GPU decode tests, same-run old vs new kernels (quest_probe.py), the bench_decode Quest table.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call2}; mkdir -p $L
timeout 120 python -m pytest -q -m gpu tests/gpu/test_decode_gpu.py 2>&1 | tail -15 > $L/gpu_tests.log
cat $L/gpu_tests.log
timeout 150 python benchmarks/results/s12/quest_probe.py --contexts 32768 131072 2>&1 | tee $L/quest_probe.log
timeout 200 python benchmarks/bench_decode.py --tables quest --contexts 16384 65536 131072 --batches 1 8 --no-flex \
  --json $L/bench_decode.json 2>&1 | tail -20 > $L/bench_decode.log
cat $L/bench_decode.log
