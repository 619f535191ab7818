# Watch session 5's probe runs (device_variants.sh) until UNTIL seconds after their start or until every run has
# ended; print progress every 60 s, then copy the newest checkpoint of the winner (or of each run still alive)
# and the logs to $OUT. Usage: UNTIL=560 bash benchmarks/results/probe/device_watch.sh
source benchmarks/results/probe/device_setup.sh
R=${PROBE_RUNS:-/tmp/probe_runs}
T0=$(cat $R/t0); UNTIL=${UNTIL:-560}
alive() { pgrep -f "train_probe_model.py --out $R" > /dev/null; }
show() {
  echo "== +$(( $(date +%s) - T0 ))s"
  for V in A B C; do
    [ -f $R/$V/train_log.jsonl ] || continue
    python3 - $R/$V <<'PY'
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1] + "/train_log.jsonl")]
tr = [e for e in ev if e.get("event") == "train"]
other = [e for e in ev if e.get("event") in ("eval", "control", "stopped", "saved")]
if tr:
    last = tr[-6:]
    tf = sum(e.get("tf_ruler_niah", 0) for e in last) / len(last)
    e = tr[-1]
    print(f"{sys.argv[1][-1]} step {e['step']} ans_loss {e['answer_loss']:.3f} tf_niah(last 300) {tf:.3f} "
          f"len {e['length']} lr {e['lr']:.2e} {e['tok_per_s']/1e3:.0f}K tok/s wait {e['data_wait_s']:.1f}s t {e['elapsed_s']:.0f}s")
for e in other[-3:]:
    print("  ", json.dumps(e)[:300])
PY
  done
  cat $R/select.log 2>/dev/null | cut -c1-400
}
while alive && [ $(( $(date +%s) - T0 )) -lt $UNTIL ]; do show; sleep 60; done
show
tail -n 5 $R/*.log | cut -c1-300 > $R/tails.txt
tar czf $OUT/logs.tar.gz --exclude="*.safetensors" -C $R . 2>/dev/null
W=$(grep -o "\"winner\": \"[A-Z]\"" $R/select.log | head -1 | cut -d\" -f4)
if [ -n "$W" ] && [ -f $R/$W/config.json ]; then
  mkdir -p $OUT/ckpt && cp $R/$W/*.safetensors $R/$W/*.json $OUT/ckpt/ && echo "winner $W checkpoint -> \$OUT/ckpt"
fi
