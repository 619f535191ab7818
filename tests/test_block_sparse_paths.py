"""Both chunk >= 64 paths of the Triton block-sparse kernel (tensor descriptors "tma" and plain "pointer" loads)
vs the PyTorch reference, on the CPU through the Triton interpreter (TRITON_INTERPRET=1, set in conftest.py).

Fresh random inputs, odd lengths, varlen batches (a sample ending mid-tile is followed by another sample, so a
descriptor load past a sample's end reads real foreign rows that must be masked), GQA 4:1, head dims 64 and 128,
key tiles narrower than the chunk (BLOCK_N < chunk_size), rows whose index lacks the diagonal, outputs poisoned
with NaN so unwritten rows show.
"""
import pytest
import torch

from sparse_attn.kernels.block_sparse import naive_block_sparse_attention
from sparse_attn.kernels.block_sparse.triton import triton_block_sparse_attention

from .test_kernels_prefill import packed, random_block_index, rel_err


@pytest.mark.parametrize("path", ["tma", "pointer"])
@pytest.mark.parametrize("chunk,head_dim,lengths,launch", [
    (64, 64, (150, 71), None),
    (128, 128, (300, 131), None),
    (128, 64, (257,), (128, 64, 4, 2, False)),   # two key tiles per chunk
    (128, 64, (200, 77), (64, 64, 4, 2, False)),  # two query tiles per chunk read the same index row
    (128, 64, (390, 77), (64, 64, 4, 2, False, True)),  # software-pipelined Q K^T (tma only; pointer ignores it)
    (64, 128, (333, 64), (64, 64, 4, 2, False, True)),
])
def test_paths_match_reference(path, chunk, head_dim, lengths, launch):
    gen = torch.Generator().manual_seed(chunk + head_dim + len(lengths))
    q, k, v, cu = packed(lengths, 4, 1, head_dim, seed=chunk * 7 + head_dim)
    index, count = random_block_index(lengths, 4, chunk, 3, gen, drop_diagonal=True)
    want = naive_block_sparse_attention(q, k, v, cu, index, count, chunk)
    out = torch.full_like(q, float("nan"))
    got = triton_block_sparse_attention(q, k, v, cu, index, count, chunk, out=out, launch=launch, path=path)
    assert got.data_ptr() == out.data_ptr()
    assert not got.isnan().any(), "rows left unwritten"
    assert rel_err(got, want) < 1e-5


def test_tma_path_refuses_layouts_it_cannot_read():
    q, k, v, cu = packed((128,), 4, 1, 64, seed=1)
    index = torch.zeros(1, 4, 2, 1, dtype=torch.int32)
    index[:, :, 1] = 1
    count = torch.ones(1, 4, 2, dtype=torch.int32)
    q_strided = torch.randn(128, 4, 128)[..., :64]  # heads padded to 128: stride(1) != head_dim
    with pytest.raises(ValueError, match="path='pointer'"):
        triton_block_sparse_attention(q_strided, k, v, cu, index, count, 64, path="tma")
    with pytest.raises(ValueError, match="path must be"):
        triton_block_sparse_attention(q, k, v, cu, index, count, 64, path="fast")
