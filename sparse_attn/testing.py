"""Tiny offline models and tokenizers for tests, examples and CI (no Hugging Face Hub access needed).

Everything is built from configs with random weights, deterministic for a given seed, and saved with
`save_pretrained` so the same folder works with `from_pretrained`, `lm_eval --model hf|vllm` and `vllm.LLM`.

    from sparse_attn.testing import build_tiny_model
    path = build_tiny_model("/tmp/tiny-llama", family="llama")

Notes from measurements on our CPU machines (../shared/ENVIRONMENT.md): vLLM's CPU attention needs head_dim >= 32,
and a large `initializer_range` (0.3) is needed or greedy output is one repeated token and attention changes are
invisible, which would make "the method changed the output" tests prove nothing.
"""
from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Iterable, Optional

FAMILIES = ("llama", "qwen2", "qwen3", "mistral", "gemma3")
TOKENIZER_KINDS = ("bpe", "wordpiece", "unigram")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>", "[UNK]"]


def _training_corpus(seed: int = 0, lines: int = 20000) -> list[str]:
    """English-like text covering what our tasks write: words, numbers, ids, punctuation, tags."""
    rng = random.Random(seed)
    words = _english_words()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    corpus = []
    for _ in range(lines):
        kind = rng.random()
        if kind < 0.6:
            sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
            corpus.append(sentence.capitalize() + rng.choice([".", "?", "!", ":", ","]))
        elif kind < 0.8:
            key = "-".join("".join(rng.choice(alphabet) for _ in range(8)) for _ in range(4))
            corpus.append(f"The value for key {key} is: {rng.randint(0, 99999)}.")
        else:
            corpus.append(f"<answer>{rng.randint(1, 20)}. VAR {''.join(rng.choice('ABCDEFGHIJ') for _ in range(5))}"
                          f" = {rng.randint(10000, 99999)}</answer> Chapter {rng.randint(1, 500)}:")
    return corpus


def _english_words() -> list[str]:
    try:
        import wonderwords

        assets = Path(wonderwords.__file__).parent / "assets"
        words: list[str] = []
        for name in ("nounlist.txt", "adjectivelist.txt", "verblist.txt"):
            words += (assets / name).read_text().split()
        return sorted(set(words))
    except Exception:  # wonderwords is a test/tasks extra; a fixed list keeps this module usable without it
        return ("the of and to in is was for on that with as by at from this it be are or have an they which one "
                "you had word but not what all were when we there can said each she do how their if will up other "
                "about out many then them these so some her would make like him into time has look two more go see "
                "number no way could people my than first water been call who oil its now find long down day did "
                "get come made may part chapter item value key question answer document story").split()


def build_tokenizer(path: Optional[str | os.PathLike] = None, kind: str = "bpe", vocab_size: int = 1024,
                    seed: int = 0):
    """Train a small tokenizer offline and wrap it as a `PreTrainedTokenizerFast` with a ChatML chat template.

    kind: "bpe" (byte-level BPE, like GPT/Llama-3/Qwen), "wordpiece" (BERT-like), "unigram" (SentencePiece-like).
    Saved to `path` when given. Returns the tokenizer.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    if kind not in TOKENIZER_KINDS:
        raise ValueError(f"tokenizer kind {kind!r} unknown; choose one of {TOKENIZER_KINDS}")
    corpus = _training_corpus(seed)
    if kind == "bpe":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS,
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    elif kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.NFKC()
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
        tok.decoder = decoders.WordPiece()
        trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    else:
        tok = Tokenizer(models.Unigram())
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Metaspace()
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="[UNK]")
    tok.train_from_iterator(corpus, trainer=trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|im_end|>", pad_token="<pad>",
        unk_token="[UNK]", model_max_length=1 << 20,
    )
    fast.chat_template = CHATML_TEMPLATE
    if path is not None:
        fast.save_pretrained(str(path))
    return fast


def tiny_config(family: str = "llama", vocab_size: int = 1024, num_layers: int = 2, hidden_size: int = 128,
                num_heads: int = 4, num_kv_heads: int = 2, head_dim: int = 32, max_position_embeddings: int = 32768):
    """A tiny random-init config of the given decoder family (GQA 2:1, head_dim 32 by default)."""
    import transformers

    common = dict(
        vocab_size=vocab_size, hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads,
        head_dim=head_dim, max_position_embeddings=max_position_embeddings, initializer_range=0.3,
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=2, pad_token_id=3,
    )
    if family == "llama":
        return transformers.LlamaConfig(**common)
    if family == "qwen2":
        return transformers.Qwen2Config(**common)
    if family == "qwen3":  # QK-norm
        return transformers.Qwen3Config(**common)
    if family == "mistral":
        return transformers.MistralConfig(**common, sliding_window=None)
    if family == "gemma3":
        # Gemma-3 interleaves sliding-window (local) and global layers; keep one of each with a short window so
        # tests exercise both kinds. Sparse methods act on the global layers only.
        layers = max(num_layers, 2)
        return transformers.Gemma3TextConfig(
            **{**common, "num_hidden_layers": layers, "initializer_range": 0.02}, sliding_window=64,
            layer_types=["sliding_attention" if i % 2 == 0 else "full_attention" for i in range(layers)],
            query_pre_attn_scalar=head_dim,
        )  # initializer 0.02: Gemma scales embeddings by sqrt(hidden), a larger init repeats one token (measured)
    raise ValueError(f"unknown family {family!r}; choose one of {FAMILIES}")


def build_tiny_model(path: str | os.PathLike, family: str = "llama", tokenizer_kind: str = "bpe", seed: int = 0,
                     dtype: str = "float32", **config_overrides):
    """Build, save and return the path of a tiny random model (+ its offline tokenizer) of `family`.

    Reuses the folder when it already holds a model built with the same arguments.
    """
    import torch
    import transformers

    path = Path(path)
    recipe = {"family": family, "tokenizer_kind": tokenizer_kind, "seed": seed, "dtype": dtype, **config_overrides}
    stamp = path / "sparse_attn_tiny.json"
    if stamp.exists() and json.loads(stamp.read_text()) == recipe:
        return path
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(path, kind=tokenizer_kind, seed=seed)
    config = tiny_config(family, vocab_size=len(tokenizer), **config_overrides)
    config.bos_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    torch.manual_seed(seed)
    model_cls = transformers.Gemma3ForCausalLM if family == "gemma3" else transformers.AutoModelForCausalLM
    model = model_cls.from_config(config) if model_cls is transformers.AutoModelForCausalLM else model_cls(config)
    model = model.to(getattr(torch, dtype))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(path))
    stamp.write_text(json.dumps(recipe))
    return path


def random_prompts(tokenizer, lengths: Iterable[int], seed: int = 0) -> list[str]:
    """Plain-text prompts of roughly the given token lengths (words from the tokenizer's training distribution)."""
    rng = random.Random(seed)
    words = _english_words()
    prompts = []
    for length in lengths:
        text = ""
        while len(tokenizer(text, add_special_tokens=False)["input_ids"]) < length:
            text += " ".join(rng.choice(words) for _ in range(max(1, length // 4))) + ". "
        ids = tokenizer(text, add_special_tokens=False)["input_ids"][:length]
        prompts.append(tokenizer.decode(ids))
    return prompts
