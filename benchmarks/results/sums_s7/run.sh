#!/usr/bin/env bash
# Session 7, first call (one H200): sums-pass ablations and launch sweep at 128K (sweep.py).
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/sums_s7; mkdir -p "$LOG"
cd benchmarks
timeout 520 python3 results/sums_s7/sweep.py > "$LOG/sweep.log" 2>&1
echo "sweep rc=$?"; cat "$LOG/sweep.log" | cut -c1-200
