#!/usr/bin/env bash
# Session 9, first device call (one H200): block_sparse start-up options (bs_startup.py) and their GPU tests, then
# the fp32 score scaling of the estimation passes (94ee0db, reverted in 6f23532) measured against the shipped code:
# select-kernel profiles base / fp32 / base, the estimation GPU tests under the patch. Logs in $OUT/s9a/
# (copied to benchmarks/results/s9/logs/call1/).
# Ran with two files that are not on main: kernels/block_sparse/triton.py with the DIAG_FIRST / L2_PREFETCH
# switches (see bs_startup.py) and benchmarks/results/s9/estimation_triton_fp32.py, made by
#   git show 6f23532 -- kernels/estimation/triton.py | patch -R -o benchmarks/results/s9/estimation_triton_fp32.py \
#       kernels/estimation/triton.py
# Both variants lost and were dropped.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/s9a; mkdir -p "$LOG"
start=$(date +%s)
python3 -c "import torch, triton; print(torch.cuda.get_device_name(), 'torch', torch.__version__, 'triton', triton.__version__, 'cudnn', torch.backends.cudnn.version())"
timeout 200 python3 benchmarks/results/s9/bs_startup.py > "$LOG/bs_startup.log" 2>&1
echo "bs_startup rc=$? ($(( $(date +%s) - start )) s)"; grep -E "^##|^\||check|FAIL" "$LOG/bs_startup.log" | cut -c1-150
timeout 100 python3 -c "
import sys, pytest
import sparse_attn.kernels.block_sparse.triton as bs
bs.DIAG_FIRST = bs.L2_PREFETCH = True
sys.exit(pytest.main(['-q', '-m', 'gpu', '-p', 'no:cacheprovider', 'tests/gpu/test_block_sparse_gpu.py']))" > "$LOG/bs_tests_flags.log" 2>&1
echo "block_sparse gpu tests, both options on: rc=$? ($(( $(date +%s) - start )) s)"; tail -n 3 "$LOG/bs_tests_flags.log"
prof() {
  (cd benchmarks && timeout 70 python3 profile_select_kernels.py --lengths 131072 > "$LOG/select_$1.log" 2>&1)
  echo "profile $1 rc=$? ($(( $(date +%s) - start )) s)"; grep -E "^## " "$LOG/select_$1.log" | cut -c1-160
  grep -A8 "^| kernel" "$LOG/select_$1.log" | cut -c1-110
}
prof base1
cp kernels/estimation/triton.py "$LOG/estimation_triton_shipped.py"
cp benchmarks/results/s9/estimation_triton_fp32.py kernels/estimation/triton.py
echo "fp32 scaling applied rc=$?"
timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider tests/gpu/test_estimation_skew_gpu.py tests/gpu/test_prefill_gpu.py \
    > "$LOG/est_tests_fp32.log" 2>&1
echo "estimation/prefill gpu tests with fp32 scaling rc=$? ($(( $(date +%s) - start )) s)"; tail -n 3 "$LOG/est_tests_fp32.log"
prof fp32
cp "$LOG/estimation_triton_shipped.py" kernels/estimation/triton.py
echo "shipped estimation restored rc=$?"
prof base2
