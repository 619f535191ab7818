#!/usr/bin/env python
"""Train the probe model: a tiny Llama (GQA, RoPE) that solves our own long-context tasks, so accuracy under
sparse attention can be measured on our machines without downloading an LLM.

What it does, in order:

1. Tokenizer (`--train-tokenizer`, else loaded from `--tokenizer`, default `assets/probe-model`): byte-level BPE
   (vocabulary `--vocab-size`, digits split one per token) trained with `tokenizers` on prompts and answers that
   the task generators write (seed 900000, sized with `sparse_attn.testing`'s bootstrap tokenizer), ChatML chat
   template, eos = `<|im_end|>`. The tasks size prompts with the tokenizer, hence tokenizer first, data after.
2. Model: `LlamaConfig` (hidden 256, 6 layers, 4 query heads / 2 KV heads of dim 64, rope_theta 100000,
   16384 positions, tied embeddings), random init from `--seed`.
3. Data: batches built on the fly by a `torch.utils.data.DataLoader` (workers = `--workers`) from the task
   generators (`sparse_attn.tasks.build_task(name, tokenizer, seed=--data-seed)`, default 1000, disjoint from the
   evaluation seed 43: sample i draws from `random.Random(seed + i)`, evaluation uses 43..142). Batch b is a pure
   function of (b, seeds): its length comes from the curriculum (2K first, then 2K-4K, then 2K-8K), its size from
   `--tokens-per-step`, its sample indices are b * 256 + j, so a run is reproducible and any worker count gives
   the same batches in the same order.
4. Target: exactly what the scorers parse, `<answer>\\n{gold}\\n</answer>` then eos (lm-eval's sf_* tasks stop on
   eos only). Loss: next-token cross-entropy on those target tokens only (the prompt is random data).
5. Training: AdamW, linear warm-up then cosine decay, bf16 autocast on CUDA, PyTorch SDPA attention.
   Every `--eval-every` steps: greedy generation on held-out samples (seed 43, indices 0..--eval-samples-1) of
   each task and `--eval-lengths`, scored by the task's own scorer. Logs go to stdout and `<out>/train.log`
   (one JSON line per event in `<out>/train_log.jsonl`).
6. Output: a standard Hugging Face folder in `<out>` (bf16 `model.safetensors`, config, generation config,
   tokenizer files), loadable with `AutoModelForCausalLM.from_pretrained`.

Examples:
    python scripts/train_probe_model.py --train-tokenizer --tokenizer-only --out assets/probe-model   # CPU, secs
    python scripts/train_probe_model.py --out /tmp/probe --steps 3 --tokens-per-step 4096 --lengths 2048 \\
        --eval-lengths 2048 --eval-samples 1 --workers 0                                      # CPU smoke test
    python scripts/train_probe_model.py --out $OUT/probe-model --steps 5000                  # the H100 run
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
               curriculum=(0.3, 0.55)):
    """(target length, batch size) of batch `step`: a curriculum over the allowed lengths, short ones first
    (retrieval is learnt fastest on short prompts, then carries over to longer ones): before the fraction
    `curriculum[i]` of the steps only the first i + 1 lengths are drawn (fractions beyond the last length are
    ignored; lengths without a fraction are allowed from the start of the last stage)."""
    rng = random.Random(seed * 1_000_003 + step)
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
                 curriculum=(0.3, 0.55), start_step: int = 0, task_args=None):
        self.curriculum = tuple(curriculum)
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
                                     self.curriculum)
            seqs = []
            for j in range(bsz):
                name = self.tasks[(step + j) % len(self.tasks)]
                variants = gens[name]
                index = step * 256 + j
                sample = variants[index % len(variants)].generate_sample(length, index)
                seqs.append(encode_example(tok, sample))
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
    """(input ids, number of prompt tokens): prompt and target tokenised apart, as lm-eval feeds the prompt and
    the model generates the rest."""
    prompt = tok(sample["input"], add_special_tokens=False)["input_ids"]
    target = tok(target_text(sample), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return prompt + target, len(prompt)


def collate(seqs, pad_id: int, step: int, length: int):
    """Right-padded batch: input_ids [B, T], labels [B, T] (-100 on prompt and padding). No attention mask is
    needed: attention is causal and padding only follows the real tokens."""
    import torch

    width = max(len(ids) for ids, _ in seqs)
    input_ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), -100, dtype=torch.long)
    for i, (ids, n_prompt) in enumerate(seqs):
        input_ids[i, :len(ids)] = torch.tensor(ids)
        labels[i, n_prompt:len(ids)] = torch.tensor(ids[n_prompt:])
    return {"input_ids": input_ids, "labels": labels, "step": step, "length": length}


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


def answer_loss(model, input_ids, labels, prompt_weight: float = 0.0):
    """Next-token cross-entropy on the target tokens, plus `prompt_weight` x the mean cross-entropy on the prompt
    tokens (0: answer only). The prompt term adds copy supervision (the question is repeated after the context,
    and needle keys and variable names recur), which shortens the plateau before retrieval is learnt; its random
    keys are unpredictable and only cost a constant. Logits are computed only where a loss is taken."""
    import torch.nn.functional as F

    hidden = model.model(input_ids=input_ids).last_hidden_state[:, :-1]
    target = labels[:, 1:]
    keep = target != -100
    answer = F.cross_entropy(model.lm_head(hidden[keep]).float(), target[keep])
    loss = answer
    if prompt_weight > 0:
        prompt = (target == -100) & (input_ids[:, 1:] != model.config.pad_token_id)
        loss = loss + prompt_weight * F.cross_entropy(model.lm_head(hidden[prompt]).float(),
                                                      input_ids[:, 1:][prompt])
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
    p.add_argument("--heads", type=int, default=0, help="query heads (default hidden / 64; KV heads = half)")
    p.add_argument("--tasks", default=",".join(TASKS))
    p.add_argument("--lengths", default="2048,4096,8192", help="training target lengths, curriculum order")
    p.add_argument("--eval-lengths", default="2048,4096,8192")
    p.add_argument("--eval-samples", type=int, default=8)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--steps", type=int, default=4000)
    p.add_argument("--tokens-per-step", type=int, default=32768)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--prompt-loss-weight", type=float, default=0.25,
                   help="weight of the prompt tokens' loss next to the answer's (0: answer tokens only)")
    p.add_argument("--weight-decay", type=float, default=0.1)
    p.add_argument("--hidden", type=int, default=256)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--seed", type=int, default=0, help="model init and batch-plan seed")
    p.add_argument("--data-seed", type=int, default=1000, help="task seed of the training samples (eval uses 43)")
    p.add_argument("--curriculum", default="0.3,0.55",
                   help="fractions of the steps before which only the first 1, 2, ... lengths are drawn")
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
        tok = train_tokenizer(args.vocab_size, tasks, kind=args.pretokenizer)
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
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    sets = held_out(tok, tasks, eval_lengths, args.eval_samples)
    data = TaskBatches(tokenizer_dir, tasks, lengths, args.tokens_per_step, args.steps, args.data_seed, args.seed,
                       curriculum=[float(x) for x in args.curriculum.split(",")],
                       task_args=json.loads(args.task_args))
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=args.workers,
                                         prefetch_factor=4 if args.workers else None,
                                         persistent_workers=False, pin_memory=device.type == "cuda")
    t0 = time.time()
    window = {"loss": 0.0, "tokens": 0, "n": 0, "seq_tokens": 0, "wait": 0.0, "t0": 0.0}
    t_fetch = time.time()
    step = 0
    for batch in loader:
        step = batch["step"]
        window["wait"] += time.time() - t_fetch
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        input_ids = batch["input_ids"].to(device, non_blocking=True)
        labels = batch["labels"].to(device, non_blocking=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss, ans = answer_loss(model, input_ids, labels, args.prompt_loss_weight)
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
                 "data_wait_s": window["wait"]})
            window = {"loss": 0.0, "tokens": 0, "n": 0, "seq_tokens": 0, "wait": 0.0, "t0": el}
        stop = args.max_minutes and (time.time() - t0) > 60 * args.max_minutes
        if done % args.eval_every == 0 or done == args.steps or stop:
            scores = evaluate(model, tok, sets, device)
            log({"event": "eval", "step": done, "elapsed_s": time.time() - t0, **scores})
        if stop:
            log({"event": "stopped", "reason": f"--max-minutes {args.max_minutes}", "step": done})
            break
        t_fetch = time.time()

    model.config._attn_implementation = "sdpa"
    model.generation_config.pad_token_id = tok.pad_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.bos_token_id = tok.bos_token_id
    # shards under 16 MB: each file of the checkpoint must fit the device's return channel and the repository
    model.to(torch.bfloat16).save_pretrained(str(out), safe_serialization=True, max_shard_size="15MB")
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(str(out))  # as loaded (eval switched padding)
    log({"event": "saved", "out": str(out), "steps": step + 1, "train_s": time.time() - t0})
    return 0


if __name__ == "__main__":
    sys.exit(main())
