#!/usr/bin/env bash
# vs_attn_s6: vertical-slash attention kernel, GPU verification + timing (one H200, <= ~150 s). From the repo root:
#   bash benchmarks/results/vs_attn_s6/run.sh
# 1. GPU tests (tests/gpu/test_vertical_slash_attention_gpu.py): tma and pointer paths at 16K+37 varlen and 128K vs
#    the fp32 reference on sampled rows (rel-RMSE <= 5e-3, no NaN), tma launch variants, no host sync.
# 2. bench_vs_attn.py: do_bench medians of the pre-session-6 kernel (legacy_kernel.py) vs the new paths / launches at
#    32K and 128K on the structured inputs with the real VS and FlexPrefill selection.
# Logs: $OUT/vs_attn_s6/run.log (everything), bench.log, bench.json.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT" TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn "$ROOT/$d" "sparse_attn/$d"; done
LOGDIR="${OUT:-/tmp}/vs_attn_s6"
mkdir -p "$LOGDIR"
LOG="$LOGDIR/run.log"
: > "$LOG"
start=$(date +%s)

echo "== GPU tests (vertical_slash attention paths) ==" | tee -a "$LOG"
timeout 65 python3 -m pytest -q -m gpu tests/gpu/test_vertical_slash_attention_gpu.py 2>&1 | tee -a "$LOG" | tail -n 15
echo "tests rc=${PIPESTATUS[0]} ($(( $(date +%s) - start )) s)" | tee -a "$LOG"

echo "== timing (legacy vs pointer vs tma) ==" | tee -a "$LOG"
left=$(( 145 - ($(date +%s) - start) ))
(( left < 40 )) && left=40
timeout "$left" python3 benchmarks/results/vs_attn_s6/bench_vs_attn.py --passes 2 --rep 100 \
    --json "$LOGDIR/bench.json" > "$LOGDIR/bench.log" 2>&1
rc=$?
cat "$LOGDIR/bench.log" >> "$LOG"
grep -E "^(device=|#### |\| |best:|Traceback|[A-Za-z]*Error)" "$LOGDIR/bench.log"
echo "bench rc=$rc ($(( $(date +%s) - start )) s total)" | tee -a "$LOG"
