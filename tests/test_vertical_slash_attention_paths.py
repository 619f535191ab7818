"""Both paths of the Triton vertical-slash attention kernel (Hopper tensor descriptors "tma" and plain "pointer"
loads) vs the PyTorch reference `naive_vertical_slash_attention`, on the CPU through the Triton interpreter
(TRITON_INTERPRET=1, set in conftest.py).

Fresh random patterns through `naive_build_vertical_slash_index`: unaligned slash block starts, blocks that run past
a sample's end (followed by another packed sample, so a descriptor load reads real foreign rows that must be masked
as keys and zeroed as values), rows with no columns / no blocks, GQA 4:1 and 2:1, head dims 64 and 128, varlen
batches, outputs poisoned with NaN so unwritten rows show; the launch overrides (pipelined Q K^T or not).
"""
import pytest
import torch

from sparse_attn.kernels.vertical_slash import naive_build_vertical_slash_index, naive_vertical_slash_attention
from sparse_attn.kernels.vertical_slash.triton import triton_vertical_slash_attention

from .test_kernels_prefill import packed, random_vs_pattern, rel_err


def empty_some_rows(index, gen, p=0.25):
    """Drop the blocks of some rows and the columns of others (rows with no blocks / no columns / nothing)."""
    block_count, block_offset, column_count, column_index = (t.clone() for t in index)
    no_blocks = torch.rand(block_count.shape, generator=gen) < p
    no_cols = torch.rand(column_count.shape, generator=gen) < p
    block_count[no_blocks] = 0
    block_offset[no_blocks] = -1
    column_count[no_cols] = 0
    column_index[no_cols] = -1
    return block_count, block_offset, column_count, column_index


def unaligned_tail_blocks(lengths, hq, gen):
    """A hand-made index: per row one unaligned block left of the row, one crossing its diagonal and, in each
    sample's last row, one running past the sample's end; a few columns. Exercises the masked-block path."""
    n_rows = -(-max(lengths) // 64)
    bc = torch.zeros(len(lengths), hq, n_rows, dtype=torch.int32)
    bo = torch.full((len(lengths), hq, n_rows, 3), -1, dtype=torch.int32)
    cc = torch.zeros_like(bc)
    ci = torch.full((len(lengths), hq, n_rows, 6), -1, dtype=torch.int32)
    for b, length in enumerate(lengths):
        for h in range(hq):
            for r in range(-(-length // 64)):
                q_first, starts = 64 * r, []
                if q_first >= 64:
                    starts.append(int(torch.randint(0, q_first - 63, (1,), generator=gen)))
                lo = starts[-1] + 64 if starts else 0
                diag = max(lo, q_first - int(torch.randint(1, 64, (1,), generator=gen)))
                starts.append(diag)
                if diag + 64 < min(length, q_first + 64) or (64 * r + 64 >= length and diag + 64 < length + 64):
                    starts.append(diag + 64)  # reaches past the row and, in the last row, past the sample
                bo[b, h, r, : len(starts)] = torch.tensor(starts, dtype=torch.int32)
                bc[b, h, r] = len(starts)
                cols = [c for c in torch.randperm(min(length, q_first + 64), generator=gen)[:6].sort().values.tolist()
                        if not any(s <= c < s + 64 for s in starts)]
                ci[b, h, r, : len(cols)] = torch.tensor(cols, dtype=torch.int32)
                cc[b, h, r] = len(cols)
    return bc, bo, cc, ci


CASES = [  # lengths, hq, hkv, head_dim, launch
    ((200, 77, 5), 4, 1, 64, None),
    ((130, 64), 4, 2, 128, None),
    ((257,), 2, 1, 64, (4, 2, False)),
    ((190, 66), 4, 2, 64, (64, 4, 3, True, 1)),  # column gathers not pipelined (col_stages=1)
    ((333, 70), 4, 1, 128, (64, 4, 2, True)),
]


@pytest.mark.parametrize("path", ["tma", "pointer"])
@pytest.mark.parametrize("lengths,hq,hkv,head_dim,launch", CASES)
def test_paths_match_reference_on_random_patterns(path, lengths, hq, hkv, head_dim, launch):
    seed = sum(lengths) + hq + head_dim
    gen = torch.Generator().manual_seed(seed)
    q, k, v, cu = packed(lengths, hq, hkv, head_dim, seed=seed)
    pattern = random_vs_pattern(lengths, hq, 9, 7, gen, force_local=bool(seed % 2))
    index = empty_some_rows(naive_build_vertical_slash_index(cu, *pattern), gen)
    assert int((index[1][..., 0] % 64 != 0).sum()) > 0, "the pattern must give unaligned block starts"
    want = naive_vertical_slash_attention(q, k, v, cu, *index)
    out = torch.full_like(q, float("nan"))
    got = triton_vertical_slash_attention(q, k, v, cu, *index, out=out, launch=launch, path=path)
    assert got.data_ptr() == out.data_ptr()
    assert not got.isnan().any(), "rows left unwritten"
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("path", ["tma", "pointer"])
@pytest.mark.parametrize("launch", [None, (4, 3, False), (64, 4, 2, True, 2)])
def test_paths_match_reference_on_blocks_past_the_sample(path, launch):
    lengths = (150, 100, 70)  # samples end mid-row; another sample follows (foreign rows behind the end)
    gen = torch.Generator().manual_seed(7)
    q, k, v, cu = packed(lengths, 4, 1, 64, seed=11)
    index = unaligned_tail_blocks(lengths, 4, gen)
    want = naive_vertical_slash_attention(q, k, v, cu, *index)
    out = torch.full_like(q, float("nan"))
    got = triton_vertical_slash_attention(q, k, v, cu, *index, out=out, launch=launch, path=path)
    assert not got.isnan().any(), "rows left unwritten"
    assert rel_err(got, want) < 1e-5


def test_fp16_paths_agree_with_reference():
    """16-bit data (what `auto` sends to the tma path on Hopper): both paths within fp16 error of the fp32 math.
    fp16, not bf16: the CPU interpreter computes bf16 dots wrongly (block_sparse's kernels too); bf16 is covered by
    tests/gpu/test_vertical_slash_attention_gpu.py."""
    lengths = (190, 66)
    gen = torch.Generator().manual_seed(3)
    q, k, v, cu = (t.half() if t.is_floating_point() else t for t in packed(lengths, 4, 2, 64, seed=3))
    index = naive_build_vertical_slash_index(cu, *random_vs_pattern(lengths, 4, 6, 5, gen))
    want = naive_vertical_slash_attention(q.float(), k.float(), v.float(), cu, *index)
    for path in ("tma", "pointer"):
        got = triton_vertical_slash_attention(q, k, v, cu, *index, out=torch.full_like(q, float("nan")), path=path)
        assert not got.isnan().any()
        assert rel_err(got, want) < 2e-3, path


def test_launch_and_path_errors_name_the_fix():
    q, k, v, cu = packed((64,), 2, 1, 64, seed=1)
    index = naive_build_vertical_slash_index(cu, *random_vs_pattern((64,), 2, 2, 2, torch.Generator().manual_seed(1)))
    with pytest.raises(ValueError, match="path must be"):
        triton_vertical_slash_attention(q, k, v, cu, *index, path="fast")
    with pytest.raises(ValueError, match="BLOCK_N must be 64"):
        triton_vertical_slash_attention(q, k, v, cu, *index, launch=(128, 4, 2, True))
    with pytest.raises(ValueError, match="col_stages must be"):
        triton_vertical_slash_attention(q, k, v, cu, *index, launch=(64, 4, 2, True, -1))
    with pytest.raises(ValueError, match="launch must be"):
        triton_vertical_slash_attention(q, k, v, cu, *index, launch=(4,))
    q_strided = torch.randn(64, 2, 128)[..., :64]  # heads padded: stride(1) != head_dim
    with pytest.raises(ValueError, match="path='pointer'"):
        triton_vertical_slash_attention(q_strided, k, v, cu, *index, path="tma")


def test_default_and_auto_paths_run_the_pointer_kernel_off_hopper():
    """path=None takes DEFAULT_PATH; "auto" falls back to the pointer kernel where `tma_supported` is False (CPU)."""
    from sparse_attn.kernels.vertical_slash.triton import DEFAULT_PATH
    assert DEFAULT_PATH in ("auto", "tma", "pointer")
    lengths = (100, 30)
    q, k, v, cu = packed(lengths, 2, 1, 64, seed=5)
    index = naive_build_vertical_slash_index(cu, *random_vs_pattern(lengths, 2, 4, 4, torch.Generator().manual_seed(5)))
    want = naive_vertical_slash_attention(q, k, v, cu, *index)
    for path in (None, "auto"):
        got = triton_vertical_slash_attention(q, k, v, cu, *index, out=torch.full_like(q, float("nan")), path=path)
        assert not got.isnan().any()
        assert rel_err(got, want) < 1e-5, path
