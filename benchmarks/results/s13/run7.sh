#!/bin/bash
# Session 13, device call 7: Quest kernels with the growing arguments unspecialized (GROWING_ARGS): the Quest GPU
# tests (incl. the new no-recompile test) and the compile probe of a Transformers Quest decode.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call7}; mkdir -p $L
timeout 80 python -m pytest -q -m gpu tests/gpu/test_decode_gpu.py -k "compile_once or never_syncs or (quest_step and 64K)" \
  2>&1 | tail -4 > $L/gpu_tests.log
cat $L/gpu_tests.log
timeout 90 python benchmarks/results/s13/quest_decode_compiles.py 2>&1 | grep -v Warn | tail -5 | tee $L/compiles.log
