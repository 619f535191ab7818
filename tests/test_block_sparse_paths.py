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


def test_gluon_path_is_hopper_only_and_auto_never_picks_it_here():
    """The Gluon kernel (kernels/block_sparse/gluon.py) needs a Hopper GPU: asked for on the CPU it raises an error
    naming the fix, and path="auto" runs another kernel (it is tested and benchmarked on the device:
    tests/gpu/test_block_sparse_gpu.py)."""
    from sparse_attn.kernels.block_sparse.triton import gluon_preferred
    q, k, v, cu = packed((256,), 4, 1, 128, seed=2)
    index = torch.tensor([[[[0, -1], [0, 1]]]], dtype=torch.int32).expand(1, 4, 2, 2).contiguous()
    count = torch.tensor([[[1, 2]]], dtype=torch.int32).expand(1, 4, 2).contiguous()
    assert not gluon_preferred(q, k, v, 128)
    with pytest.raises(ValueError, match="Hopper GPU .* use path='auto'"):
        triton_block_sparse_attention(q, k, v, cu, index, count, 128, path="gluon")
    want = naive_block_sparse_attention(q, k, v, cu, index, count, 128)
    got = triton_block_sparse_attention(q, k, v, cu, index, count, 128, path="auto")
    assert rel_err(got, want) < 1e-5
    with pytest.raises(ValueError, match="configures the Gluon kernel"):
        triton_block_sparse_attention(q, k, v, cu, index, count, 128, path="auto", launch=dict(k_stages=2))
    # launch options that cannot fit in shared memory are refused before any launch, naming the bound
    from sparse_attn.kernels.block_sparse.gluon import gluon_block_sparse_attention
    with pytest.raises(ValueError, match="k_stages \\+ v_stages \\+ q_bufs <= 7"):
        gluon_block_sparse_attention(q, k, v, cu, index, count, 128, 1.0, torch.empty_like(q), k_stages=4)
    with pytest.raises(ValueError, match=">= 1"):
        gluon_block_sparse_attention(q, k, v, cu, index, count, 128, 1.0, torch.empty_like(q), q_bufs=0)


# --- session 6: max_seqlen, in-kernel unmasked prefix, peeled diagonal, persistent grid, width-chosen launches ---

def messy_block_index(lengths, hq, chunk, gen, p_right=0.3, p_drop_diag=0.2):
    """Per sample, head and query block: random earlier blocks, the diagonal (dropped with p_drop_diag) and, with
    p_right, one or two blocks right of the diagonal (allowed: the causal mask removes them; with the diagonal,
    up to three entries >= the row, so the kernel's prefix count walks back). Sorted ascending, -1 padded."""
    n = -(-max(lengths) // chunk)
    width = n + 1
    index = torch.full((len(lengths), hq, n, width), -1, dtype=torch.int32)
    count = torch.zeros(len(lengths), hq, n, dtype=torch.int32)
    for b, length in enumerate(lengths):
        nb = -(-length // chunk)
        for h in range(hq):
            for m in range(nb):
                keep = torch.randperm(m, generator=gen)[: int(torch.randint(0, m + 1, (1,), generator=gen))].tolist()
                if float(torch.rand(1, generator=gen)) >= p_drop_diag:
                    keep.append(m)
                if m + 1 < nb and float(torch.rand(1, generator=gen)) < p_right:  # 1-2 blocks right of it
                    keep += torch.randint(m + 1, nb, (int(torch.randint(1, 3, (1,), generator=gen)),),
                                          generator=gen).tolist()
                keep = sorted(set(keep))
                index[b, h, m, : len(keep)] = torch.tensor(keep, dtype=torch.int32)
                count[b, h, m] = len(keep)
    return index, count


NEW_LAUNCHES = [  # (BLOCK_M, BLOCK_N, warps, stages, warp_specialize, pipeline_qk, peel_diag, persistent)
    (128, 128, 8, 2, False, True, True, 0),   # peeled diagonal
    (64, 128, 4, 2, False, True, True, 0),    # two programs per SM candidates (small rows)
    (64, 64, 4, 3, False, True, True, 0),     # BLOCK_N < chunk: the peeled tile is the diagonal's first half
    (128, 128, 8, 2, False, True, False, 1),  # persistent grid, 4 "SMs" in the interpreter
    (64, 64, 4, 2, False, True, True, 2),     # persistent + peeled + two query tiles per chunk
    (64, 64, 4, 2, False, False, False, 1),   # persistent, not pipelined
]


@pytest.mark.parametrize("launch", NEW_LAUNCHES)
def test_new_launch_options_match_reference(launch):
    lengths, head_dim = (300, 131), (128 if launch[0] == 128 else 64)
    gen = torch.Generator().manual_seed(sum(launch[:4]) + launch[7])
    q, k, v, cu = packed(lengths, 4, 1, head_dim, seed=int(launch[0]) + int(launch[7]))
    index, count = messy_block_index(lengths, 4, 128, gen)
    want = naive_block_sparse_attention(q, k, v, cu, index, count, 128)
    out = torch.full_like(q, float("nan"))
    got = triton_block_sparse_attention(q, k, v, cu, index, count, 128, out=out, launch=launch, path="tma",
                                        max_seqlen=max(lengths))
    assert not got.isnan().any(), "rows left unwritten"
    assert rel_err(got, want) < 1e-5


@pytest.mark.parametrize("path,chunk,head_dim,lengths", [
    ("tma", 64, 64, (200, 5, 77)),   # a sample shorter than one block between two others
    ("pointer", 128, 128, (257,)),
    ("pointer", 64, 64, (150, 71)),
])
def test_prefix_counted_in_kernel_with_entries_right_of_diagonal(path, chunk, head_dim, lengths):
    gen = torch.Generator().manual_seed(chunk + len(lengths))
    q, k, v, cu = packed(lengths, 4, 1, head_dim, seed=3 * chunk + head_dim)
    index, count = messy_block_index(lengths, 4, chunk, gen, p_right=0.5)
    want = naive_block_sparse_attention(q, k, v, cu, index, count, chunk)
    out = torch.full_like(q, float("nan"))
    got = triton_block_sparse_attention(q, k, v, cu, index, count, chunk, out=out, path=path)
    assert not got.isnan().any(), "rows left unwritten"
    assert rel_err(got, want) < 1e-5


def test_max_seqlen_passed_equals_read_and_too_small_raises():
    lengths = (190, 64)
    gen = torch.Generator().manual_seed(5)
    q, k, v, cu = packed(lengths, 4, 1, 64, seed=5)
    index, count = messy_block_index(lengths, 4, 64, gen)
    read = triton_block_sparse_attention(q, k, v, cu, index, count, 64, path="tma")
    passed = triton_block_sparse_attention(q, k, v, cu, index, count, 64, path="tma", max_seqlen=190)
    assert torch.equal(read, passed)
    with pytest.raises(ValueError, match="max_seqlen"):  # 120 tokens need 2 blocks, the index has 3
        triton_block_sparse_attention(q, k, v, cu, index, count, 64, path="tma", max_seqlen=120)
    with pytest.raises(ValueError, match="n_qblocks"):  # index built for too few blocks, no max_seqlen given
        triton_block_sparse_attention(q, k, v, cu, index[:, :, :2], count[:, :, :2], 64, path="tma")


def test_persistent_order_is_heaviest_first_permutation():
    from sparse_attn.kernels.block_sparse.triton import persistent_order
    gen = torch.Generator().manual_seed(0)
    count = torch.randint(0, 9, (2, 3, 5), generator=gen, dtype=torch.int32)  # [B, Hq, n_qblocks]
    order = persistent_order(count, n_tiles_m=10, block_m=64, chunk_size=128)  # two tiles per index row
    assert order.dtype == torch.int32 and sorted(order.tolist()) == list(range(10 * 6))
    tile, bh = order.long() // 6, order.long() % 6
    weight = count.view(6, 5)[bh, tile * 64 // 128]
    assert bool((weight[:-1] >= weight[1:]).all())


def test_launch_by_index_width_and_launch_validation(monkeypatch):
    from sparse_attn.kernels.block_sparse import triton as bs
    default = bs._launch_config(128, 128, True, index_width=20)
    rule = (64, 128, 4, 2, False, True, True, 0)
    monkeypatch.setattr(bs, "WIDTH_RULES", [(128, 128, 32, rule)])
    assert bs._launch_config(128, 128, True, index_width=20) == rule
    assert bs._launch_config(128, 128, True, index_width=33) == default  # wider rows keep the default
    assert bs._launch_config(128, 64, True, index_width=20) == default  # other head dim
    assert bs._launch_config(128, 128, False, index_width=20) != rule  # pointer path ignores the rules
    with pytest.raises(ValueError, match="peel_diag needs pipeline_qk"):
        bs._full_launch((128, 128, 8, 2, False, False, True))
    with pytest.raises(ValueError, match="launch must be"):
        bs._full_launch((128, 128))


@pytest.mark.parametrize("path", ["tma", "pointer"])
def test_prefix_walks_back_over_several_entries_right_of_the_row(path):
    """Hand-made rows with 0-4 entries >= the query chunk (the kernel's walk-back loop) and a row with no diagonal."""
    rows = [[0, 1, 2, 3], [1, 2, 3], [0, 3], [0, 1, 2, 3]]  # row 2 lacks its diagonal, rows 0/1 see the future
    index = torch.full((1, 4, 4, 4), -1, dtype=torch.int32)
    count = torch.zeros(1, 4, 4, dtype=torch.int32)
    for h in range(4):
        for m, entries in enumerate(rows[h:] + rows[:h]):  # every head a different rotation
            index[0, h, m, : len(entries)] = torch.tensor(entries, dtype=torch.int32)
            count[0, h, m] = len(entries)
    q, k, v, cu = packed((500,), 4, 1, 64, seed=11)
    want = naive_block_sparse_attention(q, k, v, cu, index, count, 128)
    out = torch.full_like(q, float("nan"))
    got = triton_block_sparse_attention(q, k, v, cu, index, count, 128, out=out, path=path, max_seqlen=500,
                                        launch=(128, 64, 4, 2, False, path == "tma", path == "tma", 0))
    assert not got.isnan().any(), "rows left unwritten"
    assert rel_err(got, want) < 1e-5
