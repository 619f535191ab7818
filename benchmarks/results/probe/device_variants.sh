# Session 5's probe-model training on one H200/H100, spread over several `run` calls on one warm machine:
#   bash benchmarks/results/probe/device_variants.sh        (first call; returns after starting everything)
# Three candidate models train at once on ruler_niah at 2K-4K (each its own process group, started with setsid so
# they outlive the call); at SELECT_AT s select_variant.py keeps the best one by teacher-forced answer-line exact
# match on fresh samples, kills the others and sets the winner's length so that it ends END_AT s after the start
# (wsd schedule: constant lr, then a linear decay over the last 40% of the winner's solo steps). Each run saves a
# bf16 checkpoint to $PROBE_RUNS/<name>/ every 1000 steps and at its end. Later calls watch with
# benchmarks/results/probe/device_watch.sh. The runs live outside the repository (default /tmp/probe_runs): each call
# re-sends the working tree, and an ignored folder inside it did not survive to the next call (session 5).
source benchmarks/results/probe/device_setup.sh
SELECT_AT=${SELECT_AT:-420}; END_AT=${END_AT:-990}
R=${PROBE_RUNS:-/tmp/probe_runs}
rm -rf $R && mkdir -p $R
T0=$(date +%s)
echo $T0 > $R/t0
COMMON=(--tokenizer assets/probe-model --tasks ruler_niah --lengths 2048,3072,4096 --curriculum-steps 2500,5000
        --eval-lengths 2048,3072,4096 --eval-samples 8 --eval-every 1000000 --prompt-loss-weight 0.25 --workers 7
        --schedule wsd --steps 200000 --decay-steps 2000 --warmup 200 --save-every 1000
        --max-minutes $(python3 -c "print(($END_AT + 15) / 60)"))
declare -A ARCH=([A]="--hidden 256 --layers 6 --heads 4 --lr 2e-3"
                 [B]="--hidden 384 --layers 8 --heads 6 --lr 1.5e-3"
                 [C]="--hidden 256 --layers 8 --heads 8 --lr 2e-3")
RUNS=()
for V in A B C; do
  setsid python3 scripts/train_probe_model.py --out $R/$V "${COMMON[@]}" ${ARCH[$V]} ${EXTRA:-} \
    > $R/$V.log 2>&1 < /dev/null &
  RUNS+=("$V")
done
setsid python3 benchmarks/results/probe/select_variant.py --runs "${RUNS[@]}" --t0 $T0 --select-at $SELECT_AT \
  --end-at $END_AT --root $R > $R/select.log 2>&1 < /dev/null &
echo "started ${RUNS[*]} at $T0 (select at +${SELECT_AT}s, end at +${END_AT}s)"
