# GPU trial (about 4 minutes): throughput, loss going down, held-out accuracy early on, lm-eval wheels, sweep speed.
source benchmarks/results/probe/device_setup.sh
nproc; nvidia-smi --query-gpu=name,memory.total --format=csv
python3 -m pip show huggingface-hub fsspec pyarrow pandas transformers torch triton 2>/dev/null | grep -E "^(Name|Version)"
python3 -c "import lm_eval, datasets; print('lm_eval', lm_eval.__version__, 'datasets', datasets.__version__)"
timeout 230 python3 scripts/train_probe_model.py --out /tmp/trial --steps 1600 --max-minutes 2.6 --eval-every 400 \
  --eval-samples 4 --workers 14 2>&1 | grep -v Writing
cp /tmp/trial/train.log $OUT/trial_train.log
cat > /tmp/mini.yaml <<YAML
output: /tmp/mini_sweep
models: [{path: /tmp/trial, name: trial, model_args: {dtype: bfloat16}}]
methods:
  - {method: vertical_slash, ratios: [10]}
  - {method: block_sparse, ratios: [10]}
  - {method: flexprefill, params: {alpha: 0.7, min_budget: 64}}
  - {method: snapkv, ratios: [10]}
  - {method: ada_snapkv, ratios: [10]}
  - {method: quest, ratios: [10]}
tasks: [sf_ruler_niah, sf_ruler_vt]
lengths: [8192]
samples: 8
generation: {max_gen_toks: 320}
batch_size: 8
include_path: [$PWD/integrations/lm_eval/tasks]
YAML
time timeout 110 python3 -m sparse_attn.cli sweep /tmp/mini.yaml > $OUT/mini_sweep.log 2>&1
grep -v -i warn $OUT/mini_sweep.log | tail -25
python3 - <<'PY'
import json, glob, os
for f in sorted(glob.glob("/tmp/mini_sweep/records/*.jsonl"), key=os.path.getmtime):
    rs = [json.loads(l) for l in open(f) if l.strip()]
    by = {}
    for r in rs: by.setdefault(r["task"], []).append(r)
    for t, v in by.items():
        print(os.path.basename(f)[:40], t, len(v), "score %.3f" % (sum(r["score"] for r in v) / len(v)),
              "sparsity", v[0].get("sparsity"), "out_tok", v[0].get("output_tokens"), v[0]["provenance"].get("time"))
PY
