# Sourced by device_train_eval.sh and device_eval.sh once the checkpoint is in $M and /tmp/res
# exists: until ~575 s into the command, dense accuracy through lm-eval's CLI at 2K/4K/8K (20 held-out samples per
# length, task seed 43) and, at the same time, four `sparse-attn sweep` processes sharing one results folder (a sweep
# skips jobs another process holds, so they split the grid of examples/probe_sweep.yaml; the GPU is mostly idle in
# HF decoding of a 5M model). Everything small comes back in one archive, $OUT/results.tar.gz.
LEFT=$((575 - SECONDS))
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
