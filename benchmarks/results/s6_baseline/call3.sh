# Session 6, call 3: VS / FlexPrefill select breakdown with host enqueue time (after the no-sync + top-k + tma
# attention changes), and a launch sweep of the skew_gather sums pass + statistics launches at 128K.
set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
mkdir -p $OUT/s6_call3
cd benchmarks
timeout 70 python3 profile_select_kernels.py --lengths 131072 > $OUT/s6_call3/select_kernels.log 2>&1; echo "select rc=$?"
grep -A14 "^## " $OUT/s6_call3/select_kernels.log | cut -c1-150
timeout 150 python3 bench_prefill.py --lengths 131072 --sums-compare skew_gather \
  --sums-sweep skew_gather:4,8,3,1 skew_gather:4,4,2,1 skew_gather:2,4,2,1 skew_gather:2,8,2,1 skew_gather:4,8,1,1 \
  > $OUT/s6_call3/sums_sweep.log 2>&1; echo "sweep rc=$?"
grep -E "^(== L|  \{|  stats|###|\|)" $OUT/s6_call3/sums_sweep.log | cut -c1-300 | tail -n 40
