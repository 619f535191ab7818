# Measure the committed probe checkpoint (assets/probe-model) on the H100 in one command of at most 10 minutes, run
# with the `run` tool, carry [".whl"]:   bash benchmarks/results/probe/device_eval.sh 2>&1 | tee $OUT/console.log
# In parallel: dense accuracy through lm-eval's CLI at 2K/4K/8K (20 held-out samples per length, task seed 43) and
# four `sparse-attn sweep` processes splitting the grid of examples/probe_sweep.yaml (a sweep skips jobs another
# process holds). Results: $OUT/results.tar.gz; unpack here with benchmarks/results/probe/unpack.sh (training files
# are taken from the checkpoint folder, since this run trains nothing).
source benchmarks/results/probe/device_setup.sh
M=/tmp/probe-model
mkdir -p /tmp/res && cp -r assets/probe-model $M && cp $M/config.json $M/generation_config.json /tmp/res/
cp $M/model.safetensors $OUT/
LEFT=$((570 - SECONDS))
(timeout $LEFT python3 -m lm_eval --model hf --model_args pretrained=$M,dtype=bfloat16 \
  --tasks sf_ruler_niah,sf_ruler_vt --include_path integrations/lm_eval/tasks \
  --metadata '{"max_seq_lengths": [2048, 4096, 8192], "num_samples": 20}' --batch_size 20 \
  --output_path /tmp/res/lm_eval --log_samples > /tmp/res/lm_eval_dense.log 2>&1; echo "lm_eval rc $? at ${SECONDS}s") &
sed "s#\.\./assets/probe-model#$M#; s#\.\./runs/probe_sweep#/tmp/res/sweep#; s#\.\./integrations#$PWD/integrations#" \
  examples/probe_sweep.yaml > /tmp/full.yaml
for i in 1 2 3 4; do
  (sleep $((i * 3)); timeout $((LEFT - i * 3)) python3 -m sparse_attn.cli sweep /tmp/full.yaml \
    > /tmp/res/sweep_$i.log 2>&1; echo "sweep $i rc $? at ${SECONDS}s") &
done
wait
grep -v -i warn /tmp/res/lm_eval_dense.log | grep "|" | tail -20
ls /tmp/res/sweep/records | wc -l
tar czf $OUT/results.tar.gz -C /tmp res
ls -la $OUT
