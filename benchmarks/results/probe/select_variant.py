#!/usr/bin/env python
"""Pick the best of several probe-model training runs while they train, stop the others, and set the length of the
winner's run so that it ends at a wall-clock deadline (device_variants.sh starts this beside the runs).

Each run is `scripts/train_probe_model.py --schedule wsd --steps <large> --out <root>/<name>` in its own process.
At `--select-at` seconds after the runs started, the winner is the run with the highest teacher-forced answer-line
exact match on `ruler_niah` (`tf_ruler_niah`, fresh training samples, see `answer_loss`) over its last
`--window` logged steps, ties broken by the lower answer loss. The others are killed (SIGTERM); after
`--rate-probe` seconds alone the winner's step rate is measured and `<out>/control.json` is written with the run's
final `steps` (rate x time left x `--margin`) and `decay_steps` (`--decay-frac` of the steps left). The run
applies it at its next multiple of 50 steps and logs it: the same run is reproduced by starting it with those
`--steps` / `--decay-steps` (wsd's constant phase does not depend on them). Decisions go to stdout (JSON lines).
"""
import argparse
import json
import subprocess
import time
from pathlib import Path


def last_train_events(run: Path, n: int):
    path = run / "train_log.jsonl"
    if not path.exists():
        return []
    events = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in events if e.get("event") == "train"][-n:]


def score(events):
    if not events:
        return (-1.0, float("inf"))
    tf = sum(e.get("tf_ruler_niah", 0.0) for e in events) / len(events)
    loss = sum(e["answer_loss"] for e in events) / len(events)
    return (tf, -loss)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", nargs="+", required=True, help="name of each run; its folder is <root>/<name>")
    p.add_argument("--root", default="/tmp/probe_runs")
    p.add_argument("--select-at", type=float, required=True, help="seconds after --t0 to choose")
    p.add_argument("--end-at", type=float, required=True, help="seconds after --t0 the winner must end")
    p.add_argument("--t0", type=float, required=True, help="the runs' start (unix time)")
    p.add_argument("--window", type=int, default=6, help="logged steps (x50) averaged")
    p.add_argument("--rate-probe", type=float, default=45.0)
    p.add_argument("--margin", type=float, default=0.93)
    p.add_argument("--decay-frac", type=float, default=0.4)
    args = p.parse_args()

    runs = args.runs
    root = Path(args.root)
    time.sleep(max(0.0, args.t0 + args.select_at - time.time()))
    scores = {name: score(last_train_events(root / name, args.window)) for name in runs}
    winner = max(scores, key=lambda name: scores[name])
    print(json.dumps({"event": "select", "t": time.time() - args.t0, "winner": winner,
                      "scores": {k: {"tf_ruler_niah": v[0], "answer_loss": -v[1]} for k, v in scores.items()}}),
          flush=True)
    for name in runs:
        if name != winner:
            # the run and its DataLoader workers (forked: same command line)
            subprocess.run(["pkill", "-TERM", "-f", f"train_probe_model.py --out {root}/{name} "], check=False)
    first = last_train_events(root / winner, 1)
    time.sleep(args.rate_probe)
    now = last_train_events(root / winner, 1)
    if not first or not now or now[0]["elapsed_s"] <= first[0]["elapsed_s"]:
        print(json.dumps({"event": "error", "why": "winner logged no steps during the rate probe"}), flush=True)
        return 1
    rate = (now[0]["step"] - first[0]["step"]) / (now[0]["elapsed_s"] - first[0]["elapsed_s"])
    left_s = args.t0 + args.end_at - time.time()
    step = now[0]["step"]
    remaining = max(200, int(rate * left_s * args.margin))
    decay = max(100, int(args.decay_frac * remaining))
    steps = (step + remaining + 49) // 50 * 50 + 50  # ends on a logged step; the control applies at the next 50
    (root / winner / "control.json").write_text(json.dumps({"steps": steps, "decay_steps": decay}))
    print(json.dumps({"event": "control", "t": time.time() - args.t0, "winner": winner, "step": step,
                      "solo_steps_per_s": rate, "left_s": left_s, "steps": steps, "decay_steps": decay}),
          flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
