#!/bin/bash
# Session 15, device call 4: the whole GPU test suite after the review mend (one shared order_key helper in the
# block_sparse selection, the estimation top-k, SnapKV's kept-token keys and Quest's selection).
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call4}; mkdir -p $L
timeout 330 python -m pytest -q -m gpu tests/gpu 2>&1 | tail -4 | tee $L/gpu_tests.log
