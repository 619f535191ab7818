set -u
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
mkdir -p $OUT/s6_call2
(cd benchmarks && timeout 60 python3 profile_select_kernels.py --lengths 131072 > $OUT/s6_call2/select_kernels.log 2>&1; echo "select rc=$?"; grep -A12 "^## " $OUT/s6_call2/select_kernels.log | cut -c1-150)
bash benchmarks/results/topk_s6/run.sh 2>&1 | tail -n 40
bash benchmarks/results/block_sparse_s6/run.sh 2>&1 | tail -n 60
