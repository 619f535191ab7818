# The probe model's H100 run, one command of at most 10 minutes: train (about 6 minutes), then, at the same time,
# dense accuracy through lm-eval's CLI and four `sparse-attn sweep` processes sharing one results folder (a sweep
# skips jobs another process holds, so they split the grid; the GPU is mostly idle in HF decoding of a 5M model).
# Everything small comes back in one archive ($OUT/results.tar.gz), the weights as $OUT/model.safetensors.
source benchmarks/results/probe/device_setup.sh
M=/tmp/probe-model
python3 scripts/train_probe_model.py --out $M --steps 9000 --max-minutes 5.8 --eval-every 4500 --eval-samples 8 \
  --workers 14 2>&1 | grep -v Writing
echo "== training done at ${SECONDS}s"
mkdir -p /tmp/res && cp $M/train.log $M/train_log.jsonl $M/config.json $M/generation_config.json /tmp/res/
cp $M/model.safetensors $OUT/
source benchmarks/results/probe/measure.sh
grep -h "event=eval\|event=saved\|event=stopped" /tmp/res/train.log
