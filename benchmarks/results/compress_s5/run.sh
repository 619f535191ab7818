#!/usr/bin/env bash
# compress_s5 GPU verification + benchmark (one H100/H200, <= ~150 s). Run from anywhere:
#   bash benchmarks/results/compress_s5/run.sh
# 1. GPU tests of the compression path (tests/gpu/test_kv_selection_gpu.py): SnapKV / Ada kept tokens == the
#    reference at 32K+37 / 128K, SnapKV no host sync with host seq_lens, pool / pack / keep_top kernels, and the new
#    Ada radix-select cuts (`ada_cuts`) + `allocation = "radix"` end to end (same tokens as "topk", one sync at most).
# 2. bench_decode.py compression table at 32K / 64K / 128K: snapkv with device cu_seqlens (read back) and with host
#    seq_lens (the Transformers path and now the vLLM path), ada_snapkv with allocation "topk" (default) and
#    "radix"; every row checks the kept tokens against reference_allocate; % of dense cuDNN causal prefill measured
#    in the same run.
# Logs: $OUT/compress_s5/run.log (tests + benchmark output), $OUT/compress_s5/bench_decode.json.
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
cd "$ROOT"
export PYTHONPATH="$ROOT" TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn "$ROOT/$d" "sparse_attn/$d"; done
LOGDIR="${OUT:-/tmp}/compress_s5"
mkdir -p "$LOGDIR"
LOG="$LOGDIR/run.log"
: > "$LOG"
start=$(date +%s)

echo "== GPU tests (compression) ==" | tee -a "$LOG"
timeout 60 python3 -m pytest -q -m gpu tests/gpu/test_kv_selection_gpu.py \
    -k "compress or ada or keep_top or pool_and_pack" 2>&1 | tee -a "$LOG" | tail -n 15
tests_rc=${PIPESTATUS[0]}
echo "tests rc=$tests_rc ($(( $(date +%s) - start )) s)" | tee -a "$LOG"

echo "== compression overhead ==" | tee -a "$LOG"
timeout 85 python3 benchmarks/bench_decode.py --tables compression --compression-contexts 32768 65536 131072 \
    --no-flex --quick --ada-allocations topk radix --json "$LOGDIR/bench_decode.json" >> "$LOG" 2>&1
bench_rc=$?
grep -E "^  (compression|!!)" "$LOG"
echo "bench rc=$bench_rc ($(( $(date +%s) - start )) s)" | tee -a "$LOG"

python3 - "$LOGDIR/bench_decode.json" <<'PY' | tee -a "$LOG"
import json, sys
try:
    data = json.load(open(sys.argv[1]))
except (OSError, ValueError) as error:
    sys.exit(f"no benchmark json: {error}")
print(data["header"])
print("| ctx | method | device cu_seqlens ms (% prefill) | host seq_lens ms (% prefill) | allocate ms | "
      "CUDA graph ms | kept identical | cuDNN prefill ms | target 5% |")
print("|---|---|---|---|---|---|---|---|---|")
for r in data["results"]:
    if r["table"] != "compression":
        continue
    print(f"| {r['context'] // 1024}K | {r['method']} | {r['compress_ms']:.3f} ({r['pct_of_prefill']:.2f}) | "
          f"{r['compress_host_lens_ms']:.3f} ({r['pct_host_lens']:.2f}) | {r['allocate_ms']:.3f} | "
          f"{r['compress_graph_ms']:.3f} | {r['kept_identical']} | {r['prefill_cudnn_ms']:.2f} | "
          f"{'met' if r['pct_host_lens'] <= 5 else 'MISSED'} (host lens) |")
PY
echo "done in $(( $(date +%s) - start )) s: tests rc=$tests_rc, bench rc=$bench_rc"
