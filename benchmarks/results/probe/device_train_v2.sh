# EXPERIMENT THAT STALLED (kept as the record of v2_run2; v2_run1 was the same with ruler_niah only and a 384- and a
# 256-wide model side by side): neither model started copying, see pre_tokenizer() in scripts/train_probe_model.py.
# Probe model v2, training call (<= 10 minutes, `run` tool, no carry): train the "pairs" tokenizer on ruler_niah +
# ruler_vt text (seconds), then one model (hidden 384, 8 layers, 6 query / 3 KV heads, ~15M parameters) on both
# tasks at 2K-8K for TRAIN_MIN minutes (ruler_niah prompts with 4 and 8 needles). ruler_vt stays in the mix even
# though the model may not learn it: its prompts repeat variable names many times, and the prompt loss on those
# repeats is what makes copying (induction) appear early. A niah-only run (answers only carry ~4 copy events per
# prompt) stayed on the no-copy plateau (answer loss 3.944 = template learnt, random pairs uniform) for 4,600 steps.
# Back in $OUT: A/ weights (15 MB shards), results.tar.gz (tokenizer, config, training log).
source benchmarks/results/probe/device_setup.sh
T=/tmp/tok
python3 scripts/train_probe_model.py --out $T --train-tokenizer --tokenizer-only --tasks ruler_niah,ruler_vt \
  --pretokenizer pairs
python3 scripts/train_probe_model.py --out /tmp/A --tokenizer $T --tasks ruler_niah,ruler_vt \
  --task-args '{"ruler_niah": {"num_queries": [4, 8]}}' --lengths 2048,4096,8192 --curriculum 0.2,0.45 \
  --eval-lengths 2048,4096,8192 --eval-samples 8 --prompt-loss-weight 0.25 --workers 14 \
  --hidden 384 --layers 8 --heads 6 --lr 1.5e-3 --steps ${STEPS:-8000} --eval-every 2000 \
  --max-minutes ${TRAIN_MIN:-8.0} > /tmp/A.log 2>&1
echo "== training done at ${SECONDS}s"
mkdir -p /tmp/res $OUT/A
grep -h "event=eval\|event=saved\|event=stopped" /tmp/A.log | cut -c1-400
grep "event=train" /tmp/A.log | awk 'NR % 8 == 0' | cut -c1-200
cp /tmp/A/*.safetensors $OUT/A/
mkdir -p /tmp/res/A && cp /tmp/A/*.json /tmp/A/*.jinja /tmp/A/train.log /tmp/A/train_log.jsonl /tmp/A.log /tmp/res/A/
tar czf $OUT/results.tar.gz -C /tmp res
ls -la $OUT $OUT/A
