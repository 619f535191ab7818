# The probe model's H100 run, one command of at most 10 minutes (`run` tool, carry [".whl"]: lm-eval and its missing
# dependencies, see device_setup.sh):   bash benchmarks/results/probe/device_train_eval.sh 2>&1 | tee $OUT/console.log
# Train TRAIN_MIN minutes (default 5.8), then, at the same time, dense accuracy through lm-eval's CLI and four
# `sparse-attn sweep` processes sharing one results folder (measure.sh). From scratch by default (what made v0);
# CONTINUE=1 continues the committed checkpoint instead (what made v1: its weights, a fresh AdamW with warm-up +
# cosine at lr 1e-3, all lengths from the start, data seed 3000000 so no sample of the first run repeats).
# Results: $OUT/model.safetensors and $OUT/results.tar.gz; unpack here with benchmarks/results/probe/unpack.sh.
source benchmarks/results/probe/device_setup.sh
M=/tmp/probe-model
if [ "${CONTINUE:-0}" = 1 ]; then
  RUN=(--init-from assets/probe-model --data-seed 3000000 --curriculum 0,0 --lr 1e-3 --warmup 100 --eval-samples 4)
else
  RUN=(--eval-samples 8)
fi
python3 scripts/train_probe_model.py --out $M "${RUN[@]}" --steps 9000 --max-minutes ${TRAIN_MIN:-5.8} \
  --eval-every 4500 --workers 14 2>&1 | grep -v Writing
echo "== training done at ${SECONDS}s"
mkdir -p /tmp/res && cp $M/train.log $M/train_log.jsonl $M/config.json $M/generation_config.json /tmp/res/
cp $M/model.safetensors $OUT/
source benchmarks/results/probe/measure.sh
grep -h "event=eval\|event=saved\|event=stopped" /tmp/res/train.log
