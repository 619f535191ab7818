# Session 6, call 3: VS / FlexPrefill select breakdown with host enqueue time (after the no-sync, Triton top-k and
# tma attention changes), the top-k GPU tests, the library-path VS / Flex rows at 128K, a skew_gather launch sweep.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
mkdir -p $OUT/s6_call3
timeout 90 python3 -m pytest -q -m gpu tests/gpu/test_topk_gpu.py tests/gpu/test_prefill_gpu.py -k "topk or threshold or k512 or odd or varlen or vertical_slash or select" > $OUT/s6_call3/topk_tests.log 2>&1; echo "tests rc=$?"; tail -n 8 $OUT/s6_call3/topk_tests.log | cut -c1-250
cd benchmarks
timeout 60 python3 profile_select_kernels.py --lengths 131072 > $OUT/s6_call3/select_kernels.log 2>&1; echo "select rc=$?"
grep -A12 "^## " $OUT/s6_call3/select_kernels.log | cut -c1-150
timeout 90 python3 bench_prefill.py --methods vertical_slash flexprefill --lengths 131072 > $OUT/s6_call3/bench_vs.log 2>&1; echo "bench rc=$?"
sed -n '/^### vertical_slash/,$p' $OUT/s6_call3/bench_vs.log | head -n 20; grep -E "Error|error" $OUT/s6_call3/bench_vs.log | head -n 5
timeout 70 python3 bench_prefill.py --lengths 131072 --sums-compare skew_gather \
  --sums-sweep skew_gather:4,8,3,1 skew_gather:4,4,2,1 skew_gather:2,8,2,1 \
  > $OUT/s6_call3/sums_sweep.log 2>&1; echo "sweep rc=$?"
grep -E "^(  stats|\|)" $OUT/s6_call3/sums_sweep.log | cut -c1-300 | tail -n 30
