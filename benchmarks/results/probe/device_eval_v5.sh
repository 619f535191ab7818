# Measure the probe checkpoint in assets/probe-model on one H200/H100 (`run` tool, carry [".whl"]), <= ~6 minutes:
#   bash benchmarks/results/probe/device_eval_v5.sh
# At the same time: dense accuracy through lm-eval's CLI (--model hf) on held-out sf_ruler_niah samples (task seed
# 43) at the trained lengths 2K / 3K / 4K, and four `sparse-attn sweep` processes splitting the grid of
# examples/probe_sweep.yaml (a sweep skips the jobs another process holds). Everything small comes back in
# $OUT/results.tar.gz; unpack with benchmarks/results/probe/unpack.sh.
source benchmarks/results/probe/device_setup.sh
M=$PWD/assets/probe-model; LEFT=${LEFT:-330}; N=${SAMPLES:-50}
mkdir -p /tmp/res && cp $M/config.json $M/generation_config.json /tmp/res/
(timeout $LEFT python3 -m lm_eval --model hf --model_args pretrained=$M,dtype=bfloat16 \
  --tasks sf_ruler_niah --include_path integrations/lm_eval/tasks \
  --metadata "{\"max_seq_lengths\": [2048, 3072, 4096], \"num_samples\": $N}" --batch_size $N \
  --output_path /tmp/res/lm_eval --log_samples > /tmp/res/lm_eval_dense.log 2>&1; echo "lm_eval rc $? at ${SECONDS}s") &
sed "s#\.\./assets/probe-model#$M#; s#\.\./runs/probe_sweep#/tmp/res/sweep#; s#\.\./integrations#$PWD/integrations#" \
  examples/probe_sweep.yaml > /tmp/full.yaml
for i in 1 2 3 4; do
  (sleep $((i * 3)); timeout $((LEFT - i * 3)) python3 -m sparse_attn.cli sweep /tmp/full.yaml --no-progress \
    > /tmp/res/sweep_$i.log 2>&1; echo "sweep $i rc $? at ${SECONDS}s") &
done
wait
grep -v -i warn /tmp/res/lm_eval_dense.log | grep "|" | tail -8
echo "sweep records: $(ls /tmp/res/sweep/records | wc -l)"; tail -n 3 /tmp/res/sweep_1.log
tar czf $OUT/results.tar.gz -C /tmp res
