# Probe model v4, training call (<= 10 minutes, `run` tool, no carry): the v0 recipe exactly (digit tokenizer,
# 4-needle ruler_niah + ruler_vt, prompt loss 0.25, lr 2e-3, curriculum 0.3/0.55) with ONE change: the 15M model
# (hidden 384, 8 layers, 6 query / 3 KV heads). v2_run1/v2_run2/v3_run1 all stalled and all used a 4/8-needle mix;
# this run tells whether the mix or the size stalled them. Back in $OUT: A/ weights, results.tar.gz.
source benchmarks/results/probe/device_setup.sh
python3 scripts/train_probe_model.py --out /tmp/A --tasks ruler_niah,ruler_vt \
  --lengths 2048,4096,8192 --curriculum 0.3,0.55 \
  --eval-lengths 2048,4096,8192 --eval-samples 8 --prompt-loss-weight 0.25 --workers 14 \
  --hidden 384 --layers 8 --heads 6 --lr 2e-3 --steps ${STEPS:-10000} --eval-every 2500 \
  --max-minutes ${TRAIN_MIN:-8.6} > /tmp/A.log 2>&1
echo "== training done at ${SECONDS}s"
mkdir -p /tmp/res/A $OUT/A
grep -h "event=eval\|event=saved\|event=stopped" /tmp/A.log | cut -c1-400
grep "event=train" /tmp/A.log | awk 'NR % 8 == 0' | cut -c1-200
cp /tmp/A/*.safetensors $OUT/A/
cp /tmp/A/*.json /tmp/A/*.jinja /tmp/A/train.log /tmp/A/train_log.jsonl /tmp/A.log /tmp/res/A/
tar czf $OUT/results.tar.gz -C /tmp res
ls -la $OUT/A
