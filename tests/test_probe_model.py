"""The probe model (assets/probe-model, trained by scripts/train_probe_model.py) through the whole pipeline on CPU.

At a short length (2048 tokens) a few held-out `ruler_niah` samples (seed 43, as lm-eval) are generated with the
model's own tokenizer, answered greedily by the dense model and by every sparse method at 10x compression, and scored
by the task's own scorer. The test prints each method's accuracy and achieved sparsity, asserts that every method
acted (get_stats), and asserts that dense accuracy reaches the target (a regression guard for tokenizer, chat
template, generation, EOS and scoring: any break there drops it to 0).

`assets/probe-model/evaluation.json` states whether the committed checkpoint reaches the target
(`meets_target`); while it does not (an under-trained checkpoint, see its model card), the dense-accuracy test is an
expected failure (strict: once the checkpoint reaches the target, the mark must be removed by updating the file).
"""
import json
import time
from pathlib import Path

import pytest
import torch

import sparse_attn
from sparse_attn.compression import params_for_ratio
from sparse_attn.tasks import build_task

PROBE = Path(__file__).resolve().parents[1] / "assets" / "probe-model"
LENGTH = 2048
SAMPLES = 4
RATIO = 10
TARGET = 0.9  # the acceptance level for dense accuracy at trained lengths
# FlexPrefill has no ratio rule below 16K tokens (content-dependent density): a fixed setting, achieved sparsity shown
FIXED = {"flexprefill": {"alpha": 0.7, "min_budget": 64}}
METHODS = ["vertical_slash", "block_sparse", "flexprefill", "snapkv", "ada_snapkv", "quest"]


def _evaluation():
    return json.loads((PROBE / "evaluation.json").read_text())


@pytest.fixture(scope="module")
def probe():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert sorted(PROBE.glob("*.safetensors")), f"no *.safetensors in {PROBE}: the checkpoint is committed"
    tok = AutoTokenizer.from_pretrained(PROBE)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(PROBE, attn_implementation="sdpa", dtype=torch.float32).eval()
    task = build_task("ruler_niah", tok, seed=43)
    samples = task.generate(LENGTH, SAMPLES)
    batch = tok([s["input"] for s in samples], return_tensors="pt", padding=True, add_special_tokens=False)
    longest = max(len(tok(s["gold_answer"], add_special_tokens=False)["input_ids"]) for s in samples)
    return model, tok, task, samples, batch, longest + 32  # room for the <answer> tags and eos


def _run(probe):
    model, tok, task, samples, batch, new_tokens = probe
    with torch.no_grad():
        out = model.generate(**batch, max_new_tokens=new_tokens, do_sample=False)
    texts = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
    return task.evaluate([{**s, "pred": t} for s, t in zip(samples, texts)])["accuracy"], texts


@pytest.mark.xfail(condition=not _evaluation().get("meets_target", False), strict=True,
                   reason="assets/probe-model/evaluation.json: the committed checkpoint is under-trained (see its "
                          "README.md); retrain with benchmarks/results/probe/device_train_eval.sh")
def test_probe_dense_accuracy(probe):
    model = probe[0]
    model.set_attn_implementation("sdpa")
    accuracy, texts = _run(probe)
    print(f"\nprobe model, ruler_niah @ {LENGTH} tokens, {SAMPLES} samples: dense accuracy {accuracy:.3f}")
    assert all("<answer>" in t and "</answer>" in t for t in texts), f"answer block missing: {texts}"
    assert accuracy >= TARGET, (f"dense accuracy {accuracy:.3f} < {TARGET} on ruler_niah @ {LENGTH}: the probe "
                                f"pipeline regressed (tokenizer, chat template, generation or scoring)")


def test_probe_methods_at_10x(probe):
    """Every method at 10x on the same samples: prints accuracy and achieved sparsity; asserts each one acted."""
    model = probe[0]
    lines, failures = [], []
    for method in METHODS:
        params = FIXED.get(method) or params_for_ratio(method, RATIO, LENGTH)
        sparse_attn.configure(model, method=method, **params)
        start = time.time()
        accuracy, _ = _run(probe)
        stats = sparse_attn.get_stats(model)
        lines.append(f"{method:15s} accuracy {accuracy:.3f}  sparsity {stats['sparsity']:.3f}  {params}  "
                     f"({time.time() - start:.1f} s)")
        if not stats["sparsity"] > 0:
            failures.append(f"{method}: sparsity {stats['sparsity']} (did not act; notes: {stats.get('notes')})")
        if method in ("snapkv", "ada_snapkv") and not stats["compression"]["kept_ratio"] < 0.5:
            failures.append(f"{method}: kept {stats['compression']['kept_ratio']:.2f} of the prompt at {RATIO}x")
    model.set_attn_implementation("sdpa")
    print(f"\nprobe model, ruler_niah @ {LENGTH} tokens, {SAMPLES} samples, {RATIO}x:\n" + "\n".join(lines))
    assert not failures, "; ".join(failures)
