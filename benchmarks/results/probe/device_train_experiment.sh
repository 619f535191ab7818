# A probe-model training experiment on the H100 (<= 10 minutes, `run` tool, no carry): the 15M model (hidden 384,
# 8 layers, 6 query / 3 KV heads) trained from scratch on ruler_niah + ruler_vt at 2K-8K for TRAIN_MIN minutes.
# Back in $OUT: A/ weights (15 MB shards) and results.tar.gz (config, training log); evaluate separately.
# Environment (defaults = the v0 recipe): PRETOK (digits = the committed tokenizer; pairs = train the 2-character
# tokenizer first), TASK_ARGS (JSON, --task-args), LR, CURRICULUM, STEPS, TRAIN_MIN, EVAL_EVERY.
# Session 3's runs (logs in this folder):
#   v2_run2: PRETOK=pairs TASK_ARGS='{"ruler_niah": {"num_queries": [4, 8]}}' LR=1.5e-3 CURRICULUM=0.2,0.45
#            STEPS=8000 TRAIN_MIN=8.2 EVAL_EVERY=2000   (v2_run1: the same, ruler_niah only, with a 256-wide model
#            trained beside it)                                          -> no copying in 7,700 steps
#   v3_run1: TASK_ARGS='{"ruler_niah": {"num_queries": [4, 8]}}' LR=1.5e-3 CURRICULUM=0.15,0.4 STEPS=10000
#            TRAIN_MIN=8.6 EVAL_EVERY=2500                               -> no copying in 6,100 steps
#   v4_run1: STEPS=9000 TRAIN_MIN=7.9 EVAL_EVERY=5000 (v0 recipe)        -> copying from ~1,400 steps
source benchmarks/results/probe/device_setup.sh
TOK=assets/probe-model
if [ "${PRETOK:-digits}" = pairs ]; then
  TOK=/tmp/tok
  python3 scripts/train_probe_model.py --out $TOK --train-tokenizer --tokenizer-only --tasks ruler_niah,ruler_vt \
    --pretokenizer pairs
fi
python3 scripts/train_probe_model.py --out /tmp/A --tokenizer $TOK --tasks ruler_niah,ruler_vt \
  --task-args "${TASK_ARGS:-{\}}" --lengths 2048,4096,8192 --curriculum ${CURRICULUM:-0.3,0.55} \
  --eval-lengths 2048,4096,8192 --eval-samples 8 --prompt-loss-weight 0.25 --workers 14 \
  --hidden 384 --layers 8 --heads 6 --lr ${LR:-2e-3} --steps ${STEPS:-9000} --eval-every ${EVAL_EVERY:-5000} \
  --max-minutes ${TRAIN_MIN:-8.0} > /tmp/A.log 2>&1
echo "== training done at ${SECONDS}s"
mkdir -p /tmp/res/A $OUT/A
grep -h "event=eval\|event=saved\|event=stopped" /tmp/A.log | cut -c1-400
grep "event=train" /tmp/A.log | awk 'NR % 8 == 0' | cut -c1-200
cp /tmp/A/*.safetensors $OUT/A/
cp /tmp/A/*.json /tmp/A/*.jinja /tmp/A/train.log /tmp/A/train_log.jsonl /tmp/A.log /tmp/res/A/
tar czf $OUT/results.tar.gz -C /tmp res
ls -la $OUT/A
