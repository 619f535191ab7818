#!/usr/bin/env bash
# Unpack a device run of device_train_eval.sh (here, repo root):
#   bash benchmarks/results/probe/unpack.sh /work/.device/N v1
# -> assets/probe-model/{model.safetensors,config.json,generation_config.json} (the new checkpoint),
#    benchmarks/results/probe/<name>/ (training log, lm-eval dense results, sweep records and jobs),
#    docs/probe-model/ (sparse-attn report: summary.md / summary.csv / PNG plots), and prints the lm-eval dense
#    scores to copy into assets/probe-model/evaluation.json (meets_target: NIAH >= 0.9 at every trained length).
set -euo pipefail
SRC=$1; NAME=$2
DST=benchmarks/results/probe/$NAME
TMP=$(mktemp -d)
tar xzf "$SRC/results.tar.gz" -C "$TMP"
install -m 644 "$SRC/model.safetensors" assets/probe-model/model.safetensors
install -m 644 "$TMP/res/config.json" "$TMP/res/generation_config.json" assets/probe-model/
mkdir -p "$DST"
for f in train.log train_log.jsonl; do [ -f "$TMP/res/$f" ] && cp "$TMP/res/$f" "$DST/"; done
cp "$TMP"/res/lm_eval/*/results_*.json "$DST/lm_eval_dense_results.json"
[ -f "$SRC/console.log" ] && cp "$SRC/console.log" "$DST/"
mkdir -p "$DST/sweep"
cp -r "$TMP/res/sweep/jobs" "$TMP/res/sweep/records" "$TMP/res/sweep/task_manifests" "$TMP/res/sweep/sweep.json" "$DST/sweep/"
gzip -9 "$DST"/sweep/records/*.jsonl   # per-layer statistics make them large; zcat to read
rm -rf "$TMP/report" && cp -r "$DST/sweep" "$TMP/report_src" && gunzip "$TMP"/report_src/records/*.gz
.venv/bin/sparse-attn report "$TMP/report_src"
mkdir -p docs/probe-model && cp "$TMP"/report_src/report/{summary.md,summary.csv,*.png} docs/probe-model/
python3 - "$DST/lm_eval_dense_results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["results"]
for task, m in r.items():
    print(task, {k.split(",")[0]: round(v, 4) for k, v in m.items() if "stderr" not in k and "," in k})
PY
