# Probe model v2, first device call (<= 10 minutes, `run` tool, no carry): train the "pairs" tokenizer (seconds),
# then two model sizes AT THE SAME TIME on the one H100 (small models leave it mostly idle), each stopped at
# TRAIN_MIN minutes: A = hidden 384, 8 layers, 6 query / 3 KV heads (~15M parameters); B = hidden 256, 6 layers,
# 4 / 2 heads (the v1 shape, ~5M), both on ruler_niah with 4- and 8-needle training prompts at 2K-8K.
# Back in $OUT: A/ and B/ weights (15 MB shards), results.tar.gz (tokenizer, configs, training logs).
source benchmarks/results/probe/device_setup.sh
T=/tmp/tok
python3 scripts/train_probe_model.py --out $T --train-tokenizer --tokenizer-only --tasks ruler_niah
COMMON="--tokenizer $T --tasks ruler_niah --task-args {\"ruler_niah\":{\"num_queries\":[4,8]}} --lengths 2048,4096,8192
  --curriculum 0.2,0.45 --eval-lengths 2048,4096,8192 --eval-samples 8 --prompt-loss-weight 0.1 --workers 7
  --max-minutes ${TRAIN_MIN:-8.0}"
python3 scripts/train_probe_model.py --out /tmp/A $COMMON --hidden 384 --layers 8 --heads 6 --lr 1.5e-3 \
  --steps 5000 --eval-every 1250 > /tmp/A.log 2>&1 &
python3 scripts/train_probe_model.py --out /tmp/B $COMMON --hidden 256 --layers 6 --heads 4 --lr 2e-3 \
  --steps 10000 --eval-every 2500 > /tmp/B.log 2>&1 &
wait
echo "== training done at ${SECONDS}s"
mkdir -p /tmp/res $OUT/A $OUT/B
for v in A B; do
  grep -h "event=eval\|event=saved\|event=stopped\|event=start" /tmp/$v.log | cut -c1-400
  grep "event=train" /tmp/$v.log | awk 'NR % 10 == 0' | cut -c1-200
  cp /tmp/$v/*.safetensors $OUT/$v/
  mkdir -p /tmp/res/$v && cp /tmp/$v/*.json /tmp/$v/*.jinja /tmp/$v/train.log /tmp/$v/train_log.jsonl /tmp/$v.log /tmp/res/$v/
done
tar czf $OUT/results.tar.gz -C /tmp res
ls -la $OUT $OUT/A $OUT/B
