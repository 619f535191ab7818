"""Both chunk >= 64 paths of the Triton block-sparse kernel on the GPU at real shapes (Llama-3.1-8B heads: 32 q, 8 KV,
head dim 128, bf16): "tma" (Hopper tensor descriptors, the default where supported) and "pointer" (plain loads),
against fp32 references computed in row chunks; relative RMSE <= 5e-3, every output element written (NaN-poisoned).

Run on a CUDA machine, compiled (not interpreted):
    TRITON_INTERPRET=0 python -m pytest -q -m gpu tests/gpu/test_block_sparse_gpu.py
"""
import pytest
import torch

from .common import GPU_MARKS, HQ, D
from .test_prefill_gpu import check_rows, packed, random_block_index

pytestmark = GPU_MARKS

# The persistent warp-specialized Gluon kernel (kernels/block_sparse/gluon.py): Hopper only, chunk multiple of 128.
HOPPER = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9,
                            reason="the Gluon kernel needs a Hopper GPU (compute capability 9.x)")

DEV = "cuda"


def messy_index(lens, chunk, p, seed=0):
    """random_block_index, then ~10% of the diagonals dropped and ~20% of the rows given one block right of the
    diagonal (allowed: the causal mask removes it): the unmasked prefix the kernel counts is then not count - 1."""
    index, count, keep = random_block_index(lens, chunk, p, seed=seed)
    n = keep.shape[-1]
    g = torch.Generator(device=DEV).manual_seed(seed + 1)
    r = torch.arange(n, device=DEV)
    keep = keep & ~((torch.rand(keep.shape[:-1], device=DEV, generator=g) < 0.1)[..., None] & (r[:, None] == r))
    right = (r[:, None] + 1 + (torch.rand(keep.shape[:-1], device=DEV, generator=g) * 4).long()[..., None])
    add = (torch.rand(keep.shape[:-1], device=DEV, generator=g) < 0.2)[..., None] & (r == right) & (right < n)
    keep = keep | add
    count = keep.sum(-1).to(torch.int32)
    index = torch.where(keep, r, n).sort(-1).values[..., : int(count.max())]
    return torch.where(index == n, -1, index).to(torch.int32).contiguous(), count.contiguous(), keep


def run_and_check(lens, chunk, p, rows, path, launch=None, seed=0, messy=False, max_seqlen=None):
    from sparse_attn.kernels.block_sparse.triton import triton_block_sparse_attention
    q, k, v, cu = packed(lens, seed=seed)
    index, count, keep = (messy_index if messy else random_block_index)(lens, chunk, p, seed=seed)
    out = torch.full_like(q, float("nan"))
    triton_block_sparse_attention(q, k, v, cu, index, count, chunk, out=out, launch=launch, path=path,
                                  max_seqlen=max_seqlen)

    def allowed(b, h, r, length):
        kpos = torch.arange(length, device=DEV)
        return keep[b, h][r // chunk][:, kpos // chunk] & (kpos[None, :] <= r[:, None])
    check_rows(f"block_sparse {path} {lens} chunk={chunk} p={p}", q, k, v, cu, out, allowed, rows)


@pytest.mark.parametrize("path", ["tma", "pointer"])
@pytest.mark.parametrize("lens,chunk,p,rows", [
    ([16384 + 37, 9000 + 5], 128, 0.1, None),  # samples ending mid-tile, followed by another sample
    ([16384 + 37, 9000], 64, 0.1, None),
    ([32768], 128, 0.035, 4096),
    ([131072], 128, 0.1, 2048),
])
def test_block_sparse_paths_real_shapes(path, lens, chunk, p, rows):
    run_and_check(lens, chunk, p, rows, path)


@pytest.mark.parametrize("launch", [(128, 64, 8, 3, False), (64, 64, 4, 3, False), (128, 128, 8, 2, True)])
def test_tma_launch_variants(launch):
    run_and_check([8192 + 77, 4096], 128, 0.2, None, "tma", launch=launch, seed=3)


def test_auto_picks_tma_on_hopper_and_pointer_for_strided_heads():
    from sparse_attn.kernels.block_sparse.triton import tma_supported
    q, k, v, cu = packed([4096])
    want = torch.cuda.get_device_capability()[0] >= 9
    assert tma_supported(q, k, v) == want
    padded = torch.randn(4096, HQ, 2 * D, device=DEV, dtype=torch.bfloat16)[..., :D]
    assert not tma_supported(padded, k, v)
    index, count, _ = random_block_index([4096], 128, 0.1)
    from sparse_attn.kernels.block_sparse.triton import triton_block_sparse_attention
    a = triton_block_sparse_attention(padded, k, v, cu, index, count, 128)  # auto: the pointer path, no error
    b = triton_block_sparse_attention(padded.contiguous(), k, v, cu, index, count, 128, path="pointer")
    assert not a.isnan().any() and torch.equal(a, b), "auto on strided heads must run the pointer kernel"


# Session 6 launch options: (BLOCK_M, BLOCK_N, warps, stages, warp_specialize, pipeline_qk, peel_diag, persistent).
NEW_LAUNCHES = [
    (128, 128, 8, 2, False, True, True, 0),   # peeled diagonal
    (128, 128, 8, 2, False, True, False, 1),  # persistent grid, one program per SM
    (128, 128, 8, 2, False, True, True, 1),
    (64, 64, 4, 2, False, True, True, 2),     # two programs per SM, persistent
    (64, 128, 4, 2, False, True, True, 0),
]


@pytest.mark.parametrize("launch", NEW_LAUNCHES)
def test_new_launch_options_real_shapes(launch):
    """Varlen samples ending mid-tile, dropped diagonals, blocks right of the diagonal, max_seqlen passed."""
    run_and_check([8192 + 77, 4096 + 5], 128, 0.2, None, "tma", launch=launch, seed=5, messy=True,
                  max_seqlen=8192 + 77)


@pytest.mark.parametrize("launch", [(128, 128, 8, 2, False, True, True, 1), (64, 64, 4, 2, False, True, True, 2)])
def test_persistent_long(launch):
    run_and_check([131072], 128, 0.035, 2048, "tma", launch=launch, seed=6, max_seqlen=131072)


@pytest.mark.parametrize("path,chunk,launch", [
    ("tma", 128, None), ("tma", 128, (128, 128, 8, 2, False, True, True, 1)), ("pointer", 128, None),
    ("auto", 16, None), pytest.param("gluon", 128, None, marks=HOPPER),
])
def test_max_seqlen_means_no_host_sync(path, chunk, launch):
    """With max_seqlen given the wrapper must not read the device (torch's sync debug mode raises on a sync); the
    result equals the call that reads max_seqlen from cu_seqlens."""
    from sparse_attn.kernels.block_sparse.triton import triton_block_sparse_attention
    lens = [16384 + 37, 9000 + 5]
    q, k, v, cu = packed(lens, seed=7)
    index, count, _ = messy_index(lens, chunk, 0.1, seed=7)
    want = triton_block_sparse_attention(q, k, v, cu, index, count, chunk, launch=launch, path=path)  # compiles
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        got = triton_block_sparse_attention(q, k, v, cu, index, count, chunk, launch=launch, path=path,
                                            max_seqlen=max(lens))
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="max_seqlen"):
        triton_block_sparse_attention(q, k, v, cu, index, count, chunk, launch=launch, path=path,
                                      max_seqlen=max(lens) - 4 * chunk)


GLUON_LAUNCHES = [None, dict(sorted=True), dict(k_stages=4, v_stages=2), dict(k_stages=2, v_stages=2, q_bufs=2),
                  dict(programs=7, sorted=True),
                  dict(pingpong=True), dict(pingpong=True, k_stages=2, v_stages=1, q_bufs=2, programs=5)]


@HOPPER
@pytest.mark.parametrize("launch", GLUON_LAUNCHES)
@pytest.mark.parametrize("lens,chunk,messy", [
    ([8192 + 77, 4096 + 5], 128, True),   # samples ending mid-tile, dropped diagonals, blocks right of the diagonal
    ([8192 + 77, 4096 + 5], 128, False),
    ([8192 + 200, 1000], 256, True),      # two key tiles per chunk, two query tiles per index row
])
def test_gluon_small(launch, lens, chunk, messy):
    run_and_check(lens, chunk, 0.2, None, "gluon", launch=launch, seed=11, messy=messy, max_seqlen=max(lens))


@HOPPER
@pytest.mark.parametrize("lens,chunk,p,rows", [
    ([16384 + 37, 9000 + 5], 128, 0.1, None),
    ([32768], 128, 0.035, 4096),
    ([131072], 128, 0.035, 2048),
    ([131072], 128, 0.1, 2048),
])
def test_gluon_real_shapes(lens, chunk, p, rows):
    run_and_check(lens, chunk, p, rows, "gluon", max_seqlen=max(lens))


@HOPPER
def test_gluon_head_dim_64_and_fp16_match_tma():
    """Head dim 64 (Llama-2-style small heads) and fp16: the Gluon kernel agrees with the TMA kernel."""
    from sparse_attn.kernels.block_sparse.triton import triton_block_sparse_attention
    lens = [4096 + 3, 2048 + 100]
    g = torch.Generator(device=DEV).manual_seed(12)
    for dim, dtype in ((64, torch.bfloat16), (128, torch.float16)):
        q = torch.randn(sum(lens), HQ, dim, device=DEV, dtype=dtype, generator=g)
        k = torch.randn(sum(lens), 8, dim, device=DEV, dtype=dtype, generator=g)
        v = torch.randn(sum(lens), 8, dim, device=DEV, dtype=dtype, generator=g)
        cu = torch.tensor([0, lens[0], sum(lens)], device=DEV, dtype=torch.int32)
        index, count, _ = messy_index(lens, 128, 0.3, seed=12)
        want = triton_block_sparse_attention(q, k, v, cu, index, count, 128, path="tma")
        got = torch.full_like(q, float("nan"))
        triton_block_sparse_attention(q, k, v, cu, index, count, 128, out=got, path="gluon")
        assert not got.isnan().any()
        err = float((got.float() - want.float()).pow(2).sum() / want.float().pow(2).sum()) ** 0.5
        assert err <= 5e-3, f"head dim {dim}, {dtype}: relative RMSE vs the TMA kernel {err:.2e}"


@HOPPER
def test_gluon_refuses_what_it_cannot_run():
    from sparse_attn.kernels.block_sparse.triton import triton_block_sparse_attention
    q, k, v, cu = packed([4096])
    index, count, _ = random_block_index([4096], 64, 0.1)
    with pytest.raises(ValueError, match="multiple of 128"):
        triton_block_sparse_attention(q, k, v, cu, index, count, 64, path="gluon")
    index, count, _ = random_block_index([4096], 128, 0.1)
    with pytest.raises(ValueError, match="dict"):
        triton_block_sparse_attention(q, k, v, cu, index, count, 128, path="gluon", launch=(128, 128, 8, 2))


# chunk_size 16 / 32 (the method's default is 16): the gather kernel over the union of the selected key chunks
# (kernels/block_sparse/small_chunks.py), on the method's own selection at the reference defaults.
@pytest.mark.parametrize("small_chunk_path", ["gather", "tiles"])
@pytest.mark.parametrize("lens,chunk,rows", [
    ([32768], 16, 2048),
    ([16384 + 37, 9000 + 5], 16, 1024),  # samples ending mid-chunk, followed by another sample
    ([16384 + 37], 32, 1024),
])
def test_small_chunks_method_selection_real_shapes(small_chunk_path, lens, chunk, rows, monkeypatch):
    import sparse_attn.kernels.block_sparse.triton as block_sparse_triton
    from sparse_attn.methods.block_sparse import BlockSparse
    monkeypatch.setattr(block_sparse_triton, "SMALL_CHUNK_PATH", small_chunk_path)
    q, k, v, cu = packed(lens)
    selection = BlockSparse(chunk_size=chunk).select(q, k, cu, backend="triton")
    index, count = selection.block_index, selection.block_count
    n = index.shape[2]
    slots = torch.arange(index.shape[-1], device=DEV)
    keep = torch.zeros(len(lens), HQ, n, n + 1, dtype=torch.bool, device=DEV)
    keep.scatter_(-1, torch.where(slots < count[..., None], index, n).long(), True)
    keep = keep[..., :n]
    assert float(selection.sparsity().mean()) > 0.5  # 64 chunks per query chunk: the method acted
    out = torch.full_like(q, float("nan"))
    block_sparse_triton.triton_block_sparse_attention(q, k, v, cu, index, count, chunk, out=out,
                                                      max_seqlen=max(lens))

    def allowed(b, h, r, length):
        kpos = torch.arange(length, device=DEV)
        return keep[b, h][r // chunk][:, kpos // chunk] & (kpos[None, :] <= r[:, None])
    check_rows(f"block_sparse {small_chunk_path} {lens} chunk={chunk}", q, k, v, cu, out, allowed, rows)


# The selection itself at real shapes: the Triton row top-k (early-stopping bit search over two row segments) picks
# the same key chunks as the torch rules + stable_topk, entry for entry, up to 8192 chunks per row (128K tokens).
@pytest.mark.parametrize("lens,chunk", [([131072], 16), ([32768 + 37, 9000 + 5], 16), ([65536 - 3], 32)])
def test_triton_selection_equals_torch_real_shapes(lens, chunk):
    from sparse_attn.methods.block_sparse import BlockSparse
    q, k, _, cu = packed(lens)
    method = BlockSparse(chunk_size=chunk)
    fast = method.select(q, k, cu, backend="triton", seq_lens=lens)
    oracle = method.select(q, k, cu, backend="naive", seq_lens=lens)
    assert torch.equal(fast.block_index, oracle.block_index)
    assert torch.equal(fast.block_count, oracle.block_count)
    assert int((fast.block_index >= 0).sum()) == int(fast.block_count.sum())  # every kept slot written
    assert float(fast.sparsity().mean()) > 0.5
