# Continue training the committed probe checkpoint (assets/probe-model) on the H100, then measure it: one command
# of at most 10 minutes, run with the `run` tool, carry [".whl"] (lm-eval and its missing dependencies, see
# device_setup.sh):   bash benchmarks/results/probe/device_continue.sh 2>&1 | tee $OUT/console.log
# TRAIN_MIN (default 6.0) minutes of training from the checkpoint's weights (fresh AdamW, warm-up + cosine, all
# lengths from the start, data seed 3000000 so no sample of the first run repeats), then, in parallel for the rest of
# the time: dense accuracy through lm-eval's CLI at 2K/4K/8K and four `sparse-attn sweep` processes splitting the
# grid of examples/probe_sweep.yaml (a sweep skips jobs another process holds). Results: $OUT/model.safetensors and
# $OUT/results.tar.gz; unpack here with benchmarks/results/probe/unpack.sh.
source benchmarks/results/probe/device_setup.sh
M=/tmp/probe-model
python3 scripts/train_probe_model.py --out $M --init-from assets/probe-model --data-seed 3000000 --curriculum 0,0 \
  --lr 1e-3 --warmup 100 --steps 9000 --max-minutes ${TRAIN_MIN:-6.0} --eval-every 4500 --eval-samples 4 \
  --workers 14 2>&1 | grep -v Writing
echo "== training done at ${SECONDS}s"
mkdir -p /tmp/res && cp $M/train.log $M/train_log.jsonl $M/config.json $M/generation_config.json /tmp/res/
cp $M/model.safetensors $OUT/
source benchmarks/results/probe/measure.sh
grep -h "event=eval\|event=saved\|event=stopped" /tmp/res/train.log
