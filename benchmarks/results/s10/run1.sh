#!/usr/bin/env bash
# Session 10 device calls 1 and 2 (`CALL=call2 bash run1.sh`; the kernel changed in between): the Gluon block-sparse
# kernel's first GPU contact. Smoke test (hang = sync bug), the Gluon GPU tests, then the Gluon-vs-TMA benchmark.
# Logs in $OUT/$CALL/.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/${CALL:-call1}; mkdir -p "$LOG"
start=$(date +%s)
python3 -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__)"
timeout 90 python3 benchmarks/results/s10/smoke.py > "$LOG/smoke.log" 2>&1
echo "smoke rc=$? ($(( $(date +%s) - start )) s)"; tail -n 25 "$LOG/smoke.log" | cut -c1-300
grep -q "rel-RMSE" "$LOG/smoke.log" || exit 0
timeout 150 python3 -m pytest -q -x -m gpu tests/gpu/test_block_sparse_gpu.py -k "gluon and not real_shapes" > "$LOG/gpu_tests_small.log" 2>&1
echo "gluon small tests rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^(FAILED|ERROR)|passed|failed|Error|assert" "$LOG/gpu_tests_small.log" | head -n 12 | cut -c1-300
timeout 240 python3 benchmarks/results/s10/gluon_bench.py --passes 2 --rep 100 > "$LOG/gluon_bench.log" 2>&1
echo "bench rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^##|^\||check|FAILED" "$LOG/gluon_bench.log" | cut -c1-200
