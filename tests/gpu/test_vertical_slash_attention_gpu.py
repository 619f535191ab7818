"""The vertical-slash attention kernel's paths ("tma": Hopper tensor descriptors, "pointer": plain loads) on the GPU
at real shapes (Llama-3.1-8B heads: 32 query, 8 KV, head dim 128, bf16), against the fp32 reference of
tests/gpu/test_prefill_gpu.py on sampled rows: relative RMSE <= 5e-3 and every output element written (outputs
poisoned with NaN). Inputs: a 16K+37 varlen batch (a sample ending mid-row followed by another one) and a 128K
sample, the index built by the Triton builder from a structured pattern (512 verticals, 512 slashes incl. the 64
local diagonals, so block starts are unaligned and blocks cross the diagonal and the sample's end).

Run on a CUDA machine, compiled (not interpreted):
    TRITON_INTERPRET=0 python -m pytest -q -m gpu tests/gpu/test_vertical_slash_attention_gpu.py
"""
import pytest
import torch

from .common import GPU_MARKS
from .test_prefill_gpu import DEV, check_rows, packed, structured_pattern

pytestmark = GPU_MARKS

CASES = {"16K+37 varlen": ([16384 + 37, 5000], None), "128K": ([131072], 2048)}  # lens, sampled rows per sample


def _index(lens):
    from sparse_attn.kernels.vertical_slash import build_vertical_slash_index
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device=DEV, dtype=torch.int32)
    return build_vertical_slash_index(cu, *structured_pattern(lens, 512, 512), backend="triton", max_len=max(lens))


def _allowed(index):
    bc, bo, cc, ci = index

    def allowed(b, h, r, length):
        row = r // 64
        nb, ncol = int(bc[b, h, row].max()), int(cc[b, h, row].max())
        keys = bo[b, h, row, :nb].long()[..., None] + torch.arange(64, device=DEV)
        ok = (torch.arange(nb, device=DEV)[None] < bc[b, h, row][:, None])[..., None] & (keys < length)
        keys = torch.cat([keys.flatten(1), ci[b, h, row, :ncol].long()], 1)
        ok = torch.cat([ok.flatten(1), torch.arange(ncol, device=DEV)[None] < cc[b, h, row][:, None]], 1)
        m = torch.zeros(len(r), length + 1, dtype=torch.bool, device=DEV)
        m.scatter_(1, torch.where(ok, keys, length), True)
        return m[:, :length] & (torch.arange(length, device=DEV)[None] <= r[:, None])
    return allowed


@pytest.mark.parametrize("path", ["tma", "pointer"])
@pytest.mark.parametrize("case", list(CASES))
def test_paths_real_shapes(case, path):
    from sparse_attn.kernels.vertical_slash.triton import tma_supported, triton_vertical_slash_attention
    lens, rows = CASES[case]
    q, k, v, cu = packed(lens)
    if path == "tma" and not tma_supported(q, k, v):
        pytest.skip("the tma path needs compute capability >= 9 (Hopper)")
    index = _index(lens)
    assert int((index[1][index[1] >= 0] % 64 != 0).sum()) > 0, "the pattern must give unaligned block starts"
    out = torch.full_like(q, float("nan"))
    triton_vertical_slash_attention(q, k, v, cu, *index, out=out, path=path, max_seqlen_hint=max(lens))
    check_rows(f"vertical_slash {case} path={path}", q, k, v, cu, out, _allowed(index), rows)


@pytest.mark.parametrize("launch", [(4, 2, True), (4, 3, False), (8, 2, True), (64, 8, 3, True), (64, 4, 3, True, 1)])
def test_tma_launch_variants_match_reference(launch):
    from sparse_attn.kernels.vertical_slash.triton import tma_supported, triton_vertical_slash_attention
    lens = CASES["16K+37 varlen"][0]
    q, k, v, cu = packed(lens, seed=1)
    if not tma_supported(q, k, v):
        pytest.skip("the tma path needs compute capability >= 9 (Hopper)")
    index = _index(lens)
    out = torch.full_like(q, float("nan"))
    triton_vertical_slash_attention(q, k, v, cu, *index, out=out, path="tma", launch=launch)
    check_rows(f"vertical_slash tma launch={launch}", q, k, v, cu, out, _allowed(index), 2048)


@pytest.mark.parametrize("path", ["tma", "pointer"])
def test_no_host_sync_with_max_seqlen_hint(path):
    """With the longest length given, the wrapper launches the kernel and nothing else: no device-to-host read."""
    from sparse_attn.kernels.vertical_slash.triton import tma_supported, triton_vertical_slash_attention
    lens = [4096 + 5, 1000]
    q, k, v, cu = packed(lens, seed=2)
    if path == "tma" and not tma_supported(q, k, v):
        pytest.skip("the tma path needs compute capability >= 9 (Hopper)")
    index = _index(lens)
    out = torch.empty_like(q)
    triton_vertical_slash_attention(q, k, v, cu, *index, out=out, path=path, max_seqlen_hint=max(lens))  # compile
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        triton_vertical_slash_attention(q, k, v, cu, *index, out=out, path=path, max_seqlen_hint=max(lens))
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.parametrize("path", ["tma", "pointer"])
def test_every_key_as_columns_equals_dense(path):
    """Every key a vertical (what FlexPrefill can keep on flat heads): every key left of the diagonal block is a
    column (the widest column rows: 8K), and the output is dense causal attention."""
    from sparse_attn.kernels.vertical_slash import build_vertical_slash_index
    from sparse_attn.kernels.vertical_slash.triton import tma_supported, triton_vertical_slash_attention
    lens = [8192 + 37, 3000]
    q, k, v, cu = packed(lens, seed=3)
    if path == "tma" and not tma_supported(q, k, v):
        pytest.skip("the tma path needs compute capability >= 9 (Hopper)")
    heads = q.shape[1]
    verticals = torch.arange(max(lens), device=DEV, dtype=torch.int32).expand(2, heads, -1).contiguous()
    counts = torch.tensor(lens, device=DEV, dtype=torch.int32)[:, None].expand(2, heads).contiguous()
    slashes = torch.zeros(2, heads, 1, device=DEV, dtype=torch.int32)
    index = build_vertical_slash_index(cu, verticals, counts, slashes, torch.ones_like(counts), backend="triton",
                                       max_len=max(lens))
    out = torch.full_like(q, float("nan"))
    triton_vertical_slash_attention(q, k, v, cu, *index, out=out, path=path, max_seqlen_hint=max(lens))
    check_rows(f"vertical_slash every key path={path}", q, k, v, cu, out,
               lambda b, h, r, length: torch.arange(length, device=DEV)[None] <= r[:, None], 2048)
