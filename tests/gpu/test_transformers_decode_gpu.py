"""A dense decode step of the Transformers integration on the GPU (prefill-only methods and dense decode over
transformers' DynamicCache) never runs SDPA's cuDNN backend: over a growing cache that backend spent ~20 ms of host
time per call at 128K (benchmarks/RESULTS.md, session 12). Same next-token logits as attn_implementation="sdpa".

    TRITON_INTERPRET=0 python -m pytest -q -m gpu tests/gpu/test_transformers_decode_gpu.py
"""
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

import sparse_attn  # registers the attention implementations

from .common import GPU_MARKS

pytestmark = GPU_MARKS


def test_dense_decode_step_avoids_cudnn_and_matches_sdpa():
    config = LlamaConfig(vocab_size=512, hidden_size=512, intermediate_size=1024, num_attention_heads=8,
                         num_key_value_heads=2, head_dim=64, num_hidden_layers=2, max_position_embeddings=8192)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to("cuda", torch.bfloat16).eval()
    ids = torch.randint(0, 512, (1, 3000), device="cuda")
    logits = {}
    for name in ("sdpa", "dense"):
        model.set_attn_implementation(name)
        with torch.no_grad():
            cache = DynamicCache(config=model.config)
            nxt = model(input_ids=ids, past_key_values=cache, use_cache=True, logits_to_keep=1).logits[:, -1:]
            with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                                    torch.profiler.ProfilerActivity.CUDA]) as prof:
                out = model(input_ids=nxt.argmax(-1), past_key_values=cache, use_cache=True, logits_to_keep=1)
                torch.cuda.synchronize()
        logits[name] = out.logits[0, -1].float()
        ops = " ".join(event.key for event in prof.key_averages())
        if name == "dense":
            assert "scaled_dot_product" in ops  # the decode step really ran SDPA ...
            assert "cudnn_attention" not in ops  # ... but not its cuDNN backend
    cos = torch.nn.functional.cosine_similarity(logits["sdpa"], logits["dense"], dim=0)
    assert float(cos) > 0.999  # the same attention, other kernels: bf16 rounding only


def test_quest_generate_with_cuda_graphs_equals_eager():
    """`generate()` with the Quest cache on the GPU: the CUDA-graph decode steps (the default) and the eager ones
    produce the same tokens and the same measured sparsity, padded batch of two, 40 new tokens (the graphs are
    captured on the second step and replayed after), and the graphs really replayed."""
    config = LlamaConfig(vocab_size=512, hidden_size=512, intermediate_size=1024, num_attention_heads=8,
                         num_key_value_heads=2, head_dim=64, num_hidden_layers=2, max_position_embeddings=8192)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).to("cuda", torch.bfloat16).eval()
    model.set_attn_implementation("quest")
    sparse_attn.configure(model, method="quest", token_budget=256, page_size=16)
    ids = torch.randint(3, 512, (2, 3000), device="cuda")
    mask = torch.ones_like(ids)
    mask[1, :700] = 0  # left padding: the second prompt has 2300 tokens
    runs = {}
    for graphs in (True, False):
        cache = sparse_attn.QuestCache(model, cuda_graphs=graphs)
        with torch.no_grad():
            out = model.generate(input_ids=ids, attention_mask=mask, past_key_values=cache, max_new_tokens=40,
                                 min_new_tokens=40, do_sample=False, pad_token_id=0)
        runs[graphs] = (out[:, ids.shape[1]:], sparse_attn.get_stats(model)["decode"], cache)
    assert torch.equal(runs[True][0], runs[False][0])
    assert runs[True][1]["per_step"] == runs[False][1]["per_step"] and runs[True][1]["sparsity"] > 0.8
    steppers = [layer.step_graph for layer in runs[True][2].layers]
    assert all(s is not None and s.replays >= 35 for s in steppers)
    assert all(layer.step_graph is None for layer in runs[False][2].layers)
