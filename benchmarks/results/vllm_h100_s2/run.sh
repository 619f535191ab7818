#!/bin/bash
# GPU run of session 2's vLLM benchmark (device tool, nvidia-h100-x1), after vLLM 0.25's site-packages were
# unpacked to /tmp/site (see SUMMARY.md for the two device calls). Usage: bash run.sh prefill|decode|all
# ("all": prefill rows, then decode at 64K context, stock and quest only: dense = stock was shown by the decode run)
# Writes everything under $OUT.
set -u
export PYTHONPATH=/tmp/site:$PWD:$PWD/build/vllm_s2_pytest TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
export VLLM_USE_FLASHINFER_SAMPLER=0
for d in kernels integrations tasks; do ln -sfn "$PWD/$d" "sparse_attn/$d"; done
stage=${1:?prefill, decode or all}
{ date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv;
  python -c "import torch, triton, vllm; print('torch', torch.__version__, 'triton', triton.__version__, 'vllm', vllm.__version__)"
} > "$OUT/env_$stage.txt" 2>&1
if [ "$stage" = prefill ]; then
  # the paged Quest kernels compiled on the GPU vs their references (same tests as on CPU, CUDA tensors)
  timeout 150 python -m pytest -q -p no:cacheprovider tests/test_quest_paged.py > "$OUT/gpu_tests.log" 2>&1
  echo "pytest rc=$?" >> "$OUT/gpu_tests.log"
  python benchmarks/bench_vllm.py --stage --repeats 2 --skip-decode --out "$OUT/bench_prefill.json" \
    > "$OUT/bench_prefill.log" 2>&1
elif [ "$stage" = all ]; then
  python benchmarks/bench_vllm.py --stage --repeats 2 --skip-decode --out "$OUT/bench_prefill.json" \
    > "$OUT/bench_prefill.log" 2>&1
  python benchmarks/bench_vllm.py --stage --repeats 2 --skip-prefill --decode-methods stock quest --decode-context 65536 \
    --out "$OUT/bench_decode.json" > "$OUT/bench_decode.log" 2>&1
else
  python benchmarks/bench_vllm.py --stage --repeats 2 --skip-prefill --out "$OUT/bench_decode.json" \
    > "$OUT/bench_decode.log" 2>&1
fi
echo "done rc=$?" >> "$OUT/env_$stage.txt"
