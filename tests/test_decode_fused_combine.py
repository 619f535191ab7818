"""The split-K decode with the combine folded into the last split program (atomic ticket counter) against the
PyTorch reference and the two-launch path: per-head lengths with empty splits, GQA, batch > 1, NaN-poisoned padding
and outputs, the lse, and counters back at zero after every launch (the next call relies on it).

Tiny shapes: CPU, Triton interpreter.
"""
import pytest
import torch

from sparse_attn.kernels.decode import naive_decode
from sparse_attn.kernels.decode import triton as decode_triton


@pytest.mark.parametrize("num_splits", [2, 5, 40])
@pytest.mark.parametrize("heads", [(8, 2), (3, 3)], ids=["gqa4", "mha"])
def test_fused_combine_equals_the_reference_and_the_two_launch_path(num_splits, heads):
    num_q, num_kv = heads
    gen = torch.Generator().manual_seed(num_splits + num_q)
    batch, width = 3, 150
    q = torch.randn(batch, num_q, 64, generator=gen)
    k = torch.randn(batch, num_kv, width, 64, generator=gen)
    v = torch.randn(batch, num_kv, width, 64, generator=gen)
    lens = torch.randint(1, width + 1, (batch, num_kv), generator=gen, dtype=torch.int32)
    lens[0, 0], lens[-1, -1] = width, 2  # a full head and one whose later splits are all empty
    valid = torch.arange(width) < lens[..., None]
    k[~valid] = float("nan")
    v[~valid] = float("nan")
    reference, ref_lse = naive_decode(q, k, v, lens, return_lse=True)
    results = {}
    for fused in (True, False):
        for _ in range(2):  # twice: the second launch needs the counters the first one reset
            out = torch.full_like(q, float("nan"))
            result, lse = decode_triton.triton_decode(q, k, v, lens, out=out, return_lse=True,
                                                      num_splits=num_splits, block_n=16, fuse_combine=fused)
            assert result is out and not out.isnan().any() and not lse.isnan().any()
            torch.testing.assert_close(out, reference, atol=1e-4, rtol=1e-4)
            torch.testing.assert_close(lse, ref_lse, atol=1e-4, rtol=1e-4)
            results[fused] = out
        counters = decode_triton._COUNTERS.get(str(q.device))
        assert counters is not None and int(counters.abs().sum()) == 0
    torch.testing.assert_close(results[True], results[False], atol=1e-6, rtol=1e-6)


def test_fused_combine_without_lse_and_bf16():
    gen = torch.Generator().manual_seed(5)
    q = torch.randn(2, 4, 64, generator=gen).to(torch.bfloat16)
    k = torch.randn(2, 2, 70, 64, generator=gen).to(torch.bfloat16)
    v = torch.randn(2, 2, 70, 64, generator=gen).to(torch.bfloat16)
    lens = torch.tensor([[70, 9], [33, 64]], dtype=torch.int32)
    out = torch.full_like(q, float("nan"))
    decode_triton.triton_decode(q, k, v, lens, out=out, num_splits=4, block_n=16, fuse_combine=True)
    assert not out.isnan().any()
    torch.testing.assert_close(out.float(), naive_decode(q, k, v, lens).float(), atol=2e-2, rtol=2e-2)
