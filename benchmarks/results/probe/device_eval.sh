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
source benchmarks/results/probe/measure.sh
