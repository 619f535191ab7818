#!/usr/bin/env python
"""Train the probe model: a tiny Llama (GQA, RoPE) that solves our own long-context tasks, so accuracy under
sparse attention can be measured on our machines without downloading an LLM.

What it does, in order:

1. Tokenizer (`--train-tokenizer`, else loaded from `--tokenizer`, default `assets/probe-model`): byte-level BPE
   (vocabulary `--vocab-size`, digits split one per token) trained with `tokenizers` on prompts and answers that
   the task generators write (seed 900000, sized with `sparse_attn.testing`'s bootstrap tokenizer), ChatML chat
   template, eos = `<|im_end|>`. The tasks size prompts with the tokenizer, hence tokenizer first, data after.
2. Model: `LlamaConfig` (hidden 256, 8 layers, 8 query heads / 4 KV heads of dim 64, SwiGLU 768,
   rope_theta 100000, 16384 positions, tied embeddings: 8.4M parameters), random init from `--seed`.
3. Data: batches built on the fly by a `torch.utils.data.DataLoader` (workers = `--workers`) from the task
   generators (`sparse_attn.tasks.build_task(name, tokenizer, seed=--data-seed)`, default 1000, disjoint from the
   evaluation seed 43: sample i draws from `random.Random(seed + i)`, evaluation uses 43..142). Batch b is a pure
   function of (b, seeds): its length comes from the curriculum (2K until step 2500, then 2K-3K, then 2K-4K
   from step 5000; `--curriculum-steps`), its size from
   `--tokens-per-step`, its sample indices are b * 256 + j, so a run is reproducible and any worker count gives
   the same batches in the same order.
4. Target: exactly what the scorers parse, `<answer>\\n{gold}\\n</answer>` then eos (lm-eval's sf_* tasks stop on
   eos only). Loss: next-token cross-entropy on those target tokens only (the prompt is random data).
5. Training: AdamW, linear warm-up, constant lr, linear decay over the last `--decay-steps` ("wsd"; or cosine),
   bf16 autocast on CUDA, PyTorch SDPA attention. Every 50 steps the log has the answer loss and the
   teacher-forced exact match of the answer lines on that step's fresh samples (`tf_<task>`, see answer_loss).
   Every `--eval-every` steps: greedy generation on held-out samples (seed 43, indices 0..--eval-samples-1) of
   each task and `--eval-lengths`, scored by the task's own scorer. Logs go to stdout and `<out>/train.log`
   (one JSON line per event in `<out>/train_log.jsonl`).
6. Output: a standard Hugging Face folder in `<out>` (bf16 `model.safetensors`, config, generation config,
   tokenizer files), loadable with `AutoModelForCausalLM.from_pretrained`.

Examples:
    python scripts/train_probe_model.py --train-tokenizer --tokenizer-only --out assets/probe-model   # CPU, secs
    python scripts/train_probe_model.py --out /tmp/probe --steps 3 --tokens-per-step 4096 --lengths 2048 \\
        --eval-lengths 2048 --eval-samples 1 --workers 0                                      # CPU smoke test
    python scripts/train_probe_model.py --out $OUT/probe-model     # checkpoint v5's recipe alone (one GPU, ~10 min)
The defaults are the recipe of checkpoint v5 (assets/probe-model): it was trained as run "C" of
benchmarks/results/probe/device_variants.sh, which stopped two other candidates at step ~2550 and gave it
--steps 8600 --decay-steps 2182 while it trained; the same arguments from the start give the same batches and lr.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import random
import sys
import time
from pathlib import Path
from typing import Dict, Iterator, List

REPO = Path(__file__).resolve().parents[1]
TASKS = ("ruler_niah", "ruler_vt")
TOKENIZER_SEED = 900000  # tokenizer corpus samples: disjoint from training (>= 1000) and evaluation (43..142) seeds
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]


# -- tokenizer -----------------------------------------------------------------------------------------------------
def pre_tokenizer(kind: str):
    """How text is cut before BPE merges.

    "digits" (default; checkpoints v0/v1): GPT-2 byte-level regex with one token per digit; BPE then leaves single
    letters at the ends of random runs (`... 7 4 k`), so a key's last tokens are shared by many distractors and
    retrieval needs long n-gram matching: the v1 model copied found values perfectly but failed to find half of them.
    "pairs" (experiment, not recommended): every run of letters/digits is cut into pieces of two characters from its start, spaces and
    punctuation are pieces of their own. A random key such as `sunbc74k` is always `su nb c7 4k`, in the document,
    the question and the answer alike, so the last one or two tokens of a key already identify it among the
    distractors (36^2 values per token). Measured (benchmarks/results/probe/v2_run1, v2_run2): with it, 5M and 15M
    models never started copying in 4,700-7,700 steps (answer loss flat at the no-copy value: template learnt,
    random pairs uniform), where the "digits" model started after ~1,100 steps. Likely reason: ~1,300 equally rare
    pair tokens leave no partial credit before exact induction works (single digits recur often in a window)."""
    from tokenizers import Regex, pre_tokenizers

    if kind == "pairs":
        return pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(r"[A-Za-z0-9]{1,2}|[^A-Za-z0-9\s]|\s+"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    if kind == "digits":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    raise ValueError(f"unknown pre-tokenizer {kind!r}: use 'pairs' or 'digits'")


def train_tokenizer(vocab_size: int, tasks=TASKS, samples_per_task: int = 40, kind: str = "digits"):
    """Byte-level BPE trained on task-generator text (prompts + answer blocks), cut by `pre_tokenizer(kind)`.
    Returns a `PreTrainedTokenizerFast` with the ChatML template of `sparse_attn.testing`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from sparse_attn.tasks import build_task
    from sparse_attn.testing import CHATML_TEMPLATE, build_tokenizer

    bootstrap = build_tokenizer(None, vocab_size=1024)  # only sizes the corpus prompts; any tokenizer would do
    corpus: List[str] = []
    for name in tasks:
        task = build_task(name, bootstrap, seed=TOKENIZER_SEED)
        for i in range(samples_per_task):
            sample = task.generate_sample(2048 if i % 2 else 4096, i)
            corpus += [sample["prompt"], target_text(sample)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizer(kind)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>",
                                   pad_token="<pad>", model_max_length=16384)
    fast.chat_template = CHATML_TEMPLATE
    return fast


def target_text(sample: Dict) -> str:
    """The answer the model is trained to write: the block every scorer parses (no explanation)."""
    gold = sample["gold_answer"]
    return "<answer>\n" + (gold if isinstance(gold, str) else "\n".join(gold)) + "\n</answer>"


# -- data ----------------------------------------------------------------------------------------------------------
def batch_plan(step: int, total_steps: int, lengths: List[int], tokens_per_step: int, seed: int,
               curriculum=(0.3, 0.55), curriculum_steps=None):
    """(target length, batch size) of batch `step`: a curriculum over the allowed lengths, short ones first
    (retrieval is learnt fastest on short prompts, then carries over to longer ones): before the fraction
    `curriculum[i]` of the steps only the first i + 1 lengths are drawn (fractions beyond the last length are
    ignored; lengths without a fraction are allowed from the start of the last stage). `curriculum_steps`, when
    given, are the same boundaries as absolute step numbers: then a batch does not depend on `total_steps`, so a
    run whose length is decided while it trains (control.json, see main) is the same as one given that length."""
    rng = random.Random(seed * 1_000_003 + step)
    if curriculum_steps:
        curriculum = [b / max(total_steps, 1) for b in curriculum_steps]
    frac = step / max(total_steps, 1)
    stage = sum(1 for c in curriculum[:len(lengths) - 1] if frac >= c)
    allowed = lengths[:stage + 1] if stage < len(curriculum[:len(lengths) - 1]) else lengths
    length = rng.choice(allowed)
    return length, max(1, tokens_per_step // length)


def _iterable_base():
    import torch

    return torch.utils.data.IterableDataset


class TaskBatches(_iterable_base()):
    """Iterable of training batches; with DataLoader workers, worker w builds batches w, w + W, ... (the loader
    returns them in order, so the stream is the same for any worker count)."""

    def __init__(self, tokenizer_dir: str, tasks, lengths, tokens_per_step, total_steps, data_seed, plan_seed,
                 curriculum=(0.3, 0.55), start_step: int = 0, task_args=None, curriculum_steps=None):
        self.curriculum = tuple(curriculum)
        self.curriculum_steps = tuple(curriculum_steps) if curriculum_steps else None
        self.variants = task_variants(tasks, task_args or {})
        self.tokenizer_dir, self.tasks, self.lengths = tokenizer_dir, list(tasks), list(lengths)
        self.tokens_per_step, self.total_steps = tokens_per_step, total_steps
        self.data_seed, self.plan_seed, self.start_step = data_seed, plan_seed, start_step

    def __iter__(self) -> Iterator[Dict]:
        import torch
        from transformers import AutoTokenizer

        from sparse_attn.tasks import build_task

        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        tok = AutoTokenizer.from_pretrained(self.tokenizer_dir)
        gens = {name: [build_task(name, tok, seed=self.data_seed, **args) for args in self.variants[name]]
                for name in self.tasks}
        for step in range(self.start_step + wid, self.total_steps, nw):
            length, bsz = batch_plan(step, self.total_steps, self.lengths, self.tokens_per_step, self.plan_seed,
                                     self.curriculum, self.curriculum_steps)
            seqs = []
            for j in range(bsz):
                name = self.tasks[(step + j) % len(self.tasks)]
                variants = gens[name]
                index = step * 256 + j
                sample = variants[index % len(variants)].generate_sample(length, index)
                seqs.append(encode_example(tok, sample) + (self.tasks.index(name),))
            yield collate(seqs, tok.pad_token_id, step, length)


def task_variants(tasks, task_args: Dict) -> Dict[str, List[Dict]]:
    """Task arguments per training sample: `task_args` maps a task to {argument: [choices]}; each task gets the
    product of its choices (sample `index` uses variant `index % n`). Example: {"ruler_niah": {"num_queries": [4,
    8]}} trains on 4- and 8-needle prompts: more retrievals per prompt, a denser signal (evaluation keeps the
    default 4)."""
    import itertools

    unknown = set(task_args) - set(tasks)
    if unknown:
        raise ValueError(f"--task-args names tasks not trained: {sorted(unknown)}")
    out = {}
    for name in tasks:
        choices = task_args.get(name, {})
        keys = sorted(choices)
        out[name] = [dict(zip(keys, combo)) for combo in itertools.product(*(choices[k] for k in keys))] or [{}]
    return out


def encode_example(tok, sample):
    """(input ids, number of prompt tokens, answer-line id of each target token): prompt and target tokenised
    apart, as lm-eval feeds the prompt and the model generates the rest. Line ids number the gold answer's lines
    from 1 (one per NIAH query, the one VT line); 0 marks the `<answer>` / `</answer>` tags and eos."""
    prompt = tok(sample["input"], add_special_tokens=False)["input_ids"]
    text = target_text(sample)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    starts = [i + 1 for i, c in enumerate(text) if c == "\n"]  # character offset where each line begins
    last = len(starts)  # the "</answer>" line
    line_ids = []
    for begin, _ in enc["offset_mapping"]:
        line = sum(1 for s in starts if s <= begin)
        line_ids.append(line if 0 < line < last else 0)
    return prompt + enc["input_ids"] + [tok.eos_token_id], len(prompt), line_ids + [0]


def collate(seqs, pad_id: int, step: int, length: int):
    """Right-padded batch from (ids, prompt length, line ids, task index) tuples: input_ids [B, T], labels [B, T]
    (-100 on prompt and padding), lines [B, T] (answer-line id of each label, 0 elsewhere), task [B]. No attention
    mask is needed: attention is causal and padding only follows the real tokens."""
    import torch

    width = max(len(seq[0]) for seq in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    lines = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, (ids, n_prompt, line_ids, _) in enumerate(seqs):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
        lines[i, n_prompt:len(ids)] = torch.tensor(line_ids)
    task = torch.tensor([seq[3] for seq in seqs], dtype=torch.long)
    return {"input_ids": input_ids, "labels": labels, "lines": lines, "task": task, "step": step, "length": length}


# -- model ---------------------------------------------------------------------------------------------------------
def make_config(tok, args):
    from transformers import LlamaConfig

    heads = args.heads or args.hidden // 64
    return LlamaConfig(
        vocab_size=len(tok), hidden_size=args.hidden, intermediate_size=3 * args.hidden,
        num_hidden_layers=args.layers, num_attention_heads=heads, num_key_value_heads=max(1, heads // 2),
        head_dim=64, max_position_embeddings=16384, rope_theta=100000.0, rms_norm_eps=1e-5,
        initializer_range=0.02, tie_word_embeddings=True, bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, attention_bias=False, mlp_bias=False,
    )


def answer_loss(model, input_ids, labels, prompt_weight: float = 0.0, lines=None):
    """Next-token cross-entropy on the target tokens, plus `prompt_weight` x the mean cross-entropy on the prompt
    tokens (0: answer only). The prompt term adds copy supervision (the question is repeated after the context,
    and needle keys and variable names recur), which shortens the plateau before retrieval is learnt; its random
    keys are unpredictable and only cost a constant. Logits are computed only where a loss is taken.

    With `lines` ([B, T] answer-line ids, see `encode_example`) it also returns the teacher-forced exact match of
    each answer line ([B, L] long: 1 exact, 0 not, -1 where a sample has fewer than L lines): a line
    whose every token is the argmax given the gold prefix. Greedy decoding writes exactly such a line when the
    lines before it are right too, so this tracks held-out accuracy on fresh samples at no decoding cost."""
    import torch
    import torch.nn.functional as F

    hidden = model.model(input_ids=input_ids).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    logits = model.lm_head(hidden[keep]).float()
    answer = F.cross_entropy(logits, target[keep])
    loss = answer
    line_match = None
    if lines is not None:
        with torch.no_grad():
            wrong = torch.zeros_like(target, dtype=torch.long)
            wrong[keep] = (logits.argmax(-1) != target[keep]).long()
            line_of = lines[:, 1:]
            n_lines = int(line_of.max())
            onehot = F.one_hot(line_of, n_lines + 1)[..., 1:]               # [B, T, L]
            errors = (onehot * wrong[..., None]).sum(1)                      # [B, L]
            present = onehot.sum(1) > 0
            line_match = torch.where(present, (errors == 0).long(), torch.full_like(errors, -1))
    if prompt_weight > 0:
        prompt = (target == -100) & (input_ids[:, 1:] != model.config.pad_token_id)
        loss = loss + prompt_weight * F.cross_entropy(model.lm_head(hidden[prompt]).float(),
                                                      input_ids[:, 1:][prompt])
    if lines is not None:
        return loss, answer.detach(), line_match
    return loss, answer.detach()


# -- held-out evaluation ---------------------------------------------------------------------------------------------
def held_out(tok, tasks, lengths, n: int, seed: int = 43):
    """The first `n` evaluation samples (lm-eval's default task_seed 43) of each task and length."""
    from sparse_attn.tasks import build_task

    out = {}
    for name in tasks:
        task = build_task(name, tok, seed=seed)
        for length in lengths:
            out[(name, length)] = (task, task.generate(length, n))
    return out


def evaluate(model, tok, sets, device) -> Dict[str, float]:
    """Greedy generation (batched, left padding) scored by each task's own scorer: {"task@length": score}. At most
    the longest target of the set + 8 new tokens (an untrained model never stops; decoding is the slow part)."""
    import torch

    model.eval()
    tok.padding_side = "left"
    scores = {}
    for (name, length), (task, samples) in sets.items():
        batch = tok([s["input"] for s in samples], return_tensors="pt", padding=True,
                    add_special_tokens=False).to(device)
        max_new_tokens = 8 + max(len(tok(target_text(s), add_special_tokens=False)["input_ids"]) for s in samples)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        texts = tok.batch_decode(out[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        scores[f"{name}@{length}"] = task.evaluate([{**s, "pred": t} for s, t in zip(samples, texts)])[task.metric]
    model.train()
    return scores


# -- main ------------------------------------------------------------------------------------------------------------
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (the Hugging Face checkpoint and logs)")
    p.add_argument("--tokenizer", default=str(REPO / "assets" / "probe-model"),
                   help="folder with the trained tokenizer (default assets/probe-model)")
    p.add_argument("--train-tokenizer", action="store_true", help="train the tokenizer instead of loading it")
    p.add_argument("--tokenizer-only", action="store_true", help="stop after saving the tokenizer")
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--pretokenizer", default="digits", choices=["pairs", "digits"],
                   help="how text is cut before BPE (see pre_tokenizer()); only with --train-tokenizer")
    p.add_argument("--task-args", default="{}",
                   help='JSON {task: {argument: [choices]}} for the training samples, e.g. '
                        '\'{"ruler_niah": {"num_queries": [4, 8]}}\' (evaluation uses the defaults)')
    p.add_argument("--heads", type=int, default=8, help="query heads of dim 64 (0: hidden / 64; KV heads = half)")
    p.add_argument("--tasks", default="ruler_niah", help=f"training tasks, comma-separated (tokenizer: {TASKS})")
    p.add_argument("--lengths", default="2048,3072,4096", help="training target lengths, curriculum order")
    p.add_argument("--eval-lengths", default="2048,3072,4096")
    p.add_argument("--eval-samples", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--steps", type=int, default=8600)
    p.add_argument("--tokens-per-step", type=int, default=32768)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--prompt-loss-weight", type=float, default=0.25,
                   help="weight of the prompt tokens' loss next to the answer's (0: answer tokens only)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--seed", type=int, default=0, help="model init and batch-plan seed")
    p.add_argument("--data-seed", type=int, default=1000, help="task seed of the training samples (eval uses 43)")
    p.add_argument("--curriculum", default="0.3,0.55",
                   help="fractions of the steps before which only the first 1, 2, ... lengths are drawn")
    p.add_argument("--curriculum-steps", default="2500,5000",
                   help="the curriculum's boundaries as step numbers (overrides --curriculum), e.g. 1500,3500")
    p.add_argument("--schedule", default="wsd", choices=["cosine", "wsd"],
                   help="cosine: warm-up, cosine to 0.1 x lr at --steps. wsd: warm-up, constant lr, linear decay to "
                        "0.1 x lr over the last --decay-steps steps (the steps before the decay do not depend on "
                        "--steps, so a run can be lengthened while it trains: see control.json)")
    p.add_argument("--decay-steps", type=int, default=2182, help="wsd: length of the final decay")
    p.add_argument("--save-every", type=int, default=0,
                   help="also save the bf16 checkpoint every this many steps (0: only at the end)")
    p.add_argument("--init-from", default=None,
                   help="continue from this checkpoint's weights (fresh optimizer and schedule); use another "
                        "--data-seed than the first run so no training sample repeats")
    p.add_argument("--workers", type=int, default=max(1, min(14, (os.cpu_count() or 2) - 2)))
    p.add_argument("--max-minutes", type=float, default=0.0,
                   help="safety stop: save and exit after this many minutes of training (0 = no limit)")
    args = p.parse_args(argv)

    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tasks = args.tasks.split(",")
    lengths = [int(x) for x in args.lengths.split(",")]
    eval_lengths = [int(x) for x in args.eval_lengths.split(",")]
    log_txt = open(out / "train.log", "a")
    log_json = open(out / "train_log.jsonl", "a")

    def log(event: Dict):
        line = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in event.items())
        print(line, flush=True)
        log_txt.write(line + "\n"); log_txt.flush()
        log_json.write(json.dumps(event) + "\n"); log_json.flush()

    if args.train_tokenizer:
        tok = train_tokenizer(args.vocab_size, TASKS, kind=args.pretokenizer)  # the committed tokenizer's corpus
        tok.save_pretrained(str(out))
        log({"event": "tokenizer", "vocab": len(tok)})
        tokenizer_dir = str(out)
        if args.tokenizer_only:
            return 0
    else:
        tokenizer_dir = args.tokenizer
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)

    torch.manual_seed(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.init_from:
        model = LlamaForCausalLM.from_pretrained(args.init_from, dtype=torch.float32, attn_implementation="sdpa")
        model = model.to(device)
    else:
        config = make_config(tok, args)
        config._attn_implementation = "sdpa"
        model = LlamaForCausalLM(config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log({"event": "start", "params": n_params, "device": str(device), "torch": torch.__version__,
         "args": json.dumps(vars(args))})

    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95),
                            fused=device.type == "cuda")

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        if args.schedule == "wsd":
            decay_start = args.steps - args.decay_steps
            if step < decay_start:
                return args.lr
            return args.lr * (1.0 - 0.9 * min(1.0, (step - decay_start) / max(1, args.decay_steps)))
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    sets = held_out(tok, tasks, eval_lengths, args.eval_samples)
    data = TaskBatches(tokenizer_dir, tasks, lengths, args.tokens_per_step, args.steps, args.data_seed, args.seed,
                       curriculum=[float(x) for x in args.curriculum.split(",")],
                       task_args=json.loads(args.task_args),
                       curriculum_steps=[int(x) for x in args.curriculum_steps.split(",") if x])
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=args.workers,
                                         prefetch_factor=4 if args.workers else None,
                                         persistent_workers=False, pin_memory=device.type == "cuda")
    t0 = time.time()
    window = {"loss": 0.0, "tokens": 0, "n": 0, "seq_tokens": 0, "wait": 0.0, "t0": 0.0}
    matches = {name: [0, 0] for name in tasks}  # teacher-forced answer lines: [exact, total] per task
    t_fetch = time.time()
    step = 0
    control = out / "control.json"

    def save(where: Path):
        model.config._attn_implementation = "sdpa"
        model.generation_config.pad_token_id = tok.pad_token_id
        model.generation_config.eos_token_id = tok.eos_token_id
        model.generation_config.bos_token_id = tok.bos_token_id
        # bf16 copy, shards under 16 MB: each file must fit the device's return channel and the repository
        half = {k: v.detach().to(torch.bfloat16) for k, v in model.state_dict().items()}
        model.save_pretrained(str(where), state_dict=half, safe_serialization=True, max_shard_size="15MB")
        AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(str(where))  # as loaded (eval set padding)

    for batch in loader:
        step = batch["step"]
        if step >= args.steps:
            break
        if step % 50 == 0 and control.exists():
            # A driver may set the run's length while it trains (wsd only, before the decay starts): the run is
            # then the same as one started with these --steps / --decay-steps (batches and lr before the change
            # do not depend on them). Logged, so the exact arguments are in the training log.
            wanted = json.loads(control.read_text())
            if (wanted.get("steps"), wanted.get("decay_steps")) != (args.steps, args.decay_steps):
                new_steps = int(wanted.get("steps", args.steps))
                new_decay = int(wanted.get("decay_steps", args.decay_steps))
                ok = args.schedule == "wsd" and new_steps - new_decay >= step and step < args.steps - args.decay_steps
                log({"event": "control", "step": step, "steps": new_steps, "decay_steps": new_decay,
                     "applied": bool(ok)})
                if ok:
                    args.steps, args.decay_steps = new_steps, new_decay
                else:
                    control.unlink()
        window["wait"] += time.time() - t_fetch
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        input_ids = batch["input_ids"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, ans, line_match = answer_loss(model, input_ids, labels, args.prompt_loss_weight,
                                                batch["lines"].to(device, non_blocking=True))
        per_task = batch["task"].tolist()
        for row, name_index in zip(line_match.tolist(), per_task):
            seen = [m for m in row if m >= 0]
            matches[tasks[name_index]][0] += sum(seen)
            matches[tasks[name_index]][1] += len(seen)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        window["loss"] += loss.item(); window["n"] += 1; window["tokens"] += ans.item()
        window["seq_tokens"] += input_ids.numel()
        done = step + 1
        if done % 50 == 0 or done == args.steps:
            el = time.time() - t0
            log({"event": "train", "step": done, "loss": window["loss"] / window["n"], "answer_loss": window["tokens"] / window["n"], "lr": lr_at(step),
                 "length": batch["length"], "batch": int(input_ids.shape[0]), "elapsed_s": el,
                 "tok_per_s": window["seq_tokens"] / max(el - window["t0"], 1e-9),
                 "data_wait_s": window["wait"],
                 **{f"tf_{name}": hit / max(total, 1) for name, (hit, total) in matches.items()}})
            window = {"loss": 0.0, "tokens": 0, "n": 0, "seq_tokens": 0, "wait": 0.0, "t0": el}
            matches = {name: [0, 0] for name in tasks}
        if args.save_every and done % args.save_every == 0:
            save(out)
            log({"event": "checkpoint", "step": done})
        stop = args.max_minutes and (time.time() - t0) > 60 * args.max_minutes
        if done % args.eval_every == 0 or done == args.steps or stop:
            scores = evaluate(model, tok, sets, device)
            log({"event": "eval", "step": done, "elapsed_s": time.time() - t0, **scores})
        if stop:
            log({"event": "stopped", "reason": f"--max-minutes {args.max_minutes}", "step": done})
            break
        t_fetch = time.time()

    save(out)
    log({"event": "saved", "out": str(out), "steps": step + 1, "train_s": time.time() - t0})
    return 0


if __name__ == "__main__":
    sys.exit(main())
