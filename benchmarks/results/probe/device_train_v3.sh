# Probe model v3, training call (<= 10 minutes, `run` tool, no carry): the committed digit tokenizer
# (assets/probe-model, the one that gets copying going), a wider model than v1 (hidden 384, 8 layers, 6 query / 3 KV
# heads, ~15M parameters) from scratch on ruler_niah (4- and 8-needle prompts: twice the retrievals per prompt) and
# ruler_vt (its repeated variable names give the prompt loss early copy signal) at 2K-8K, TRAIN_MIN minutes.
# Back in $OUT: A/ weights (15 MB shards), results.tar.gz (config, training log). Evaluate with lm-eval afterwards.
source benchmarks/results/probe/device_setup.sh
python3 scripts/train_probe_model.py --out /tmp/A --tasks ruler_niah,ruler_vt \
  --task-args '{"ruler_niah": {"num_queries": [4, 8]}}' --lengths 2048,4096,8192 --curriculum 0.15,0.4 \
  --eval-lengths 2048,4096,8192 --eval-samples 8 --prompt-loss-weight 0.25 --workers 14 \
  --hidden 384 --layers 8 --heads 6 --lr 1.5e-3 --steps ${STEPS:-10000} --eval-every 2500 \
  --max-minutes ${TRAIN_MIN:-8.6} > /tmp/A.log 2>&1
echo "== training done at ${SECONDS}s"
mkdir -p /tmp/res/A $OUT/A
grep -h "event=eval\|event=saved\|event=stopped" /tmp/A.log | cut -c1-400
grep "event=train" /tmp/A.log | awk 'NR % 8 == 0' | cut -c1-200
cp /tmp/A/*.safetensors $OUT/A/
cp /tmp/A/*.json /tmp/A/*.jinja /tmp/A/train.log /tmp/A/train_log.jsonl /tmp/A.log /tmp/res/A/
tar czf $OUT/results.tar.gz -C /tmp res
ls -la $OUT/A
