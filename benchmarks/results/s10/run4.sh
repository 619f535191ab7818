#!/usr/bin/env bash
# Session 10 device call 4: the Gluon producer issues K_0 before Q (Q waits for the previous item's last Q K^T).
# Smoke test, then the Gluon-vs-TMA benchmark at 16K-128K with the ring / Q-buffer variants. Logs in $OUT/call4/.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
LOG=${OUT:-/tmp}/call4; mkdir -p "$LOG"
start=$(date +%s)
timeout 90 python3 benchmarks/results/s10/smoke.py > "$LOG/smoke.log" 2>&1
echo "smoke rc=$? ($(( $(date +%s) - start )) s)"; tail -n 8 "$LOG/smoke.log" | cut -c1-300
grep -q "rel-RMSE" "$LOG/smoke.log" || exit 0
timeout 300 python3 benchmarks/results/s10/gluon_bench.py --passes 2 --rep 100 --variants tma gluon gluon_k4v2 \
    gluon_k3v2q2 gluon_pp --cases 128:131072:0.035 128:131072:0.1 128:32768:0.1 128:16384:0.1 128:16384:0.035 \
    > "$LOG/gluon_bench.log" 2>&1
echo "bench rc=$? ($(( $(date +%s) - start )) s)"
grep -E "^##|^\||FAIL" "$LOG/gluon_bench.log" | grep -v "^|---" | cut -c1-200
