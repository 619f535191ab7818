"""A dense decode step of the Transformers integration on the GPU (prefill-only methods and dense decode over
transformers' DynamicCache) never runs SDPA's cuDNN backend: over a growing cache that backend spent ~20 ms of host
time per call at 128K (benchmarks/RESULTS.md, session 12). Same next-token logits as attn_implementation="sdpa".

    TRITON_INTERPRET=0 python -m pytest -q -m gpu tests/gpu/test_transformers_decode_gpu.py
"""
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

import sparse_attn  # noqa: F401  (registers the attention implementations)

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
