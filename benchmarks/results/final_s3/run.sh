# Session 3's verification call (H100, <= 7 minutes): every GPU test on the final tree (incl. the helpers' tests that
# never ran on a GPU: keep_top, Ada per-head cut, resident sums at windows 256/512), then the compression benchmark
# (SnapKV keep_top / Ada cut commits) and the VS / FlexPrefill 128K bench. Logs under $OUT.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/device.txt
python3 -c "import torch, triton; print(torch.__version__, triton.__version__, torch.backends.cudnn.version())" >> $OUT/device.txt
date -u >> $OUT/device.txt; git log --oneline -1 >> $OUT/device.txt 2>/dev/null
timeout 150 python3 -m pytest -q -m gpu tests/gpu -p no:cacheprovider > $OUT/gpu_tests_all.log 2>&1; echo "gpu tests rc $? at ${SECONDS}s"
tail -5 $OUT/gpu_tests_all.log
timeout 100 python3 benchmarks/bench_decode.py --tables compression --compression-contexts 32768 65536 131072 \
  --no-flex --quick --json $OUT/bench_compression.json > $OUT/bench_compression.log 2>&1; echo "compression rc $? at ${SECONDS}s"
timeout $((400 - SECONDS)) python3 benchmarks/bench_prefill.py --methods vertical_slash flexprefill --lengths 131072 \
  --json $OUT/bench_prefill_vs.json > $OUT/bench_prefill_vs.log 2>&1; echo "vs rc $? at ${SECONDS}s"
grep -v "^$" $OUT/bench_compression.log | tail -22
tail -14 $OUT/bench_prefill_vs.log
