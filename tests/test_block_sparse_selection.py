"""Block-Sparse selection computed in row steps equals the full-matrix definition (naive pooled scores), with the
torch top-k and with the Triton radix top-k (interpreted on the CPU), ties included."""
import pytest
import torch

from sparse_attn.kernels.estimation import naive_pooled_block_scores
from sparse_attn.methods.block_sparse import BlockSparse


def full_matrix_selection(method, q, k, cu):
    """The definition: whole `[nb, nb]` pooled scores, forced/causal masks, stable descending sort, cut."""
    scores = naive_pooled_block_scores(q, k, cu, method.chunk_size)  # [B, Hq, nb, nb]
    nb = scores.shape[-1]
    qb, kb = torch.arange(nb)[:, None], torch.arange(nb)[None, :]
    scores = scores.masked_fill((kb == qb) | (kb == qb - 1) | (kb == 0), float("inf"))
    scores = scores.masked_fill(kb > qb, float("-inf"))
    lens = (cu[1:] - cu[:-1]).tolist()
    width = min(nb, method.top_chunks)
    want = torch.full((len(lens), q.shape[1], nb, width), -1, dtype=torch.int32)
    for b, length in enumerate(lens):
        for h in range(q.shape[1]):
            for m in range(-(-length // method.chunk_size)):
                keep = min(m + 1, method.top_chunks)
                order = torch.sort(scores[b, h, m], descending=True, stable=True).indices[:keep]
                want[b, h, m, :keep] = torch.sort(order).values.to(torch.int32)
    return want


@pytest.mark.parametrize("step_elements,backend", [(1, "naive"), (37, "naive"), (1 << 25, "naive"),
                                                   (37, "triton")])  # interpreted Triton: ~25 s a case
def test_row_steps_equal_full_matrix(step_elements, backend, monkeypatch):
    gen = torch.Generator().manual_seed(3)
    lens = [203, 77, 130]  # odd lengths, partial last blocks, batch of 3
    cu = torch.tensor([0, *torch.tensor(lens).cumsum(0).tolist()], dtype=torch.int32)
    q = torch.randn(sum(lens), 4, 16, generator=gen)
    k = torch.randn(sum(lens), 2, 16, generator=gen)  # GQA 2:1
    k[cu[1]: cu[1] + 40] = 1.0  # equal key blocks -> tied scores
    method = BlockSparse(chunk_size=8, top_chunks=6)
    monkeypatch.setattr(BlockSparse, "SCORE_ELEMENTS_PER_STEP", step_elements)
    selection = method.select(q, k, cu, backend=backend)
    want = full_matrix_selection(method, q, k, cu)
    assert torch.equal(selection.block_index, want)
    counts = (want >= 0).sum(-1).to(torch.int32)
    assert torch.equal(selection.block_count, counts)
    assert float(selection.sparsity().min()) > 0  # 6 of up to 26 blocks: the method acted


@pytest.mark.parametrize("n,start,ties", [(600, 450, True), (1300, 1262, True),  # one row segment; 1024 + 512
                                          (1300, 1262, False), (2100, 2090, False)])  # distinct: the early stop
def test_triton_row_topk_equals_stable_topk_on_ties_signs_and_zeros(n, start, ties):
    """The per-row Triton selection on crafted scores: many exact ties, negative values, 0.0 and -0.0, every
    radix byte in play; rows past a sample keep nothing. Same indices as the torch rules + `stable_topk`."""
    from sparse_attn.kernels.block_sparse.select_triton import row_segments, triton_block_topk
    from sparse_attn.kernels.estimation import stable_topk
    gen = torch.Generator().manual_seed(5)
    batch, heads, top = 2, 3, 37
    rows = n - start
    assert (row_segments(n)[1] > 0) == (n > 1024)
    scores = torch.randint(-6, 7, (batch, heads, rows, n), generator=gen).float() * 0.5  # ties everywhere
    if not ties:  # distinct values over many exponents: the search stops once the prefix isolates the top
        scale = torch.rand(batch, heads, rows, 1, generator=gen) * 50
        scores = torch.randn(batch, heads, rows, n, generator=gen) * scale
    scores[..., ::7] = torch.randn(batch, heads, rows, (n + 6) // 7, generator=gen) * 1e-3  # distinct small ones
    scores[0, 0, :, 100:110] = -0.0
    blocks_per_sample = torch.tensor([n, start + rows // 2])
    out = torch.full((batch, heads, n, top), -1, dtype=torch.int32)
    triton_block_topk(scores.clone(), start, top, blocks_per_sample, out)
    m = torch.arange(start, n)[:, None]
    kb = torch.arange(n)[None, :]
    ruled = scores.masked_fill((kb == m) | (kb == m - 1) | (kb == 0), float("inf")).masked_fill(kb > m, float("-inf"))
    count = torch.where(m[:, 0][None] < blocks_per_sample[:, None], torch.clamp(m[:, 0] + 1, max=top)[None], 0)
    want = stable_topk(ruled, count[:, None, :].expand(-1, heads, -1), kmax=top)
    assert torch.equal(out[:, :, start:], want)
    assert (out[:, :, :start] == -1).all()
    assert (out[1, :, start + rows // 2:] == -1).all()  # past the second sample
    assert (out[0, :, start:] >= 0).sum() == heads * sum(min(m + 1, top) for m in range(start, n))
