#!/bin/bash
# Session 11, device call 2: the gather kernel's GPU-only error (source variants), and the per-row Triton selection.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
L=$OUT/${CALL:-call2}; mkdir -p $L
timeout 330 python benchmarks/results/s11/debug_gather.py 2>&1 | tee $L/debug_gather.log
timeout 200 python benchmarks/results/s11/probe_bs16.py --select-only --lengths 32768 131072 2>&1 | tee $L/select.log
