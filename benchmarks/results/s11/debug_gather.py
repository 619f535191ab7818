"""Session 11, call 2: why the chunk-16 gather kernel is wrong on the GPU (rel. error ~0.1) but right under the
interpreter. Runs source variants of `small_chunks._block_sparse_fwd_gather` against the naive reference at a small
shape, one line per variant.

python benchmarks/results/s11/debug_gather.py
"""
import importlib.util
import inspect
import os
import sys
import tempfile

import torch

from sparse_attn.kernels._triton_tile import LOG2E
from sparse_attn.kernels.block_sparse import naive_block_sparse_attention
from sparse_attn.kernels.block_sparse import small_chunks as sc
from sparse_attn.methods.block_sparse import BlockSparse

DEV = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: TRITON_INTERPRET=1 smoke run of the script itself
_fn = sc._block_sparse_fwd_gather
SRC = inspect.getsource(getattr(_fn, "fn", _fn))  # the JIT / interpreter wrapper keeps the Python function
RESIDENT_HELPER = """
@triton.jit
def _step_resident(u_all, b_all, e_all, first, end, slot_of_key, G: tl.constexpr, BLOCK: tl.constexpr):
    k_chunk = tl.zeros([BLOCK], dtype=tl.int32)
    k_bits = tl.zeros([BLOCK], dtype=tl.int32)
    for j in tl.static_range(G):
        hit = (e_all == first + j) & (first + j < end)
        k_chunk = tl.where(slot_of_key == j, tl.sum(tl.where(hit, u_all, 0), 0), k_chunk)
        k_bits = tl.where(slot_of_key == j, tl.sum(tl.where(hit, b_all, 0), 0), k_bits)
    return k_chunk, k_bits

"""
VARIANTS = {
    "base": [],  # the library kernel: scalar index loads (_step_entries)
    "vector_index": [  # the first version: one [BLOCK] vector load of the entries per step
        ("""        k_chunk, k_bits = _step_entries(union, bits_row, s * G, s * G + G, slot_of_key, G, BLOCK)
        k_pos = k_chunk * CHUNK + key_in_chunk
        keep = ((k_bits[None, :] >> sub_of_row) & 1) != 0""",
         """        slot = s * G + slot_of_key
        k_pos = tl.load(union + slot) * CHUNK + key_in_chunk
        keep = ((tl.load(bits_row + slot)[None, :] >> sub_of_row) & 1) != 0"""),
        ("""        k_chunk, k_bits = _step_entries(union, bits_row, s * G, n_union, slot_of_key, G, BLOCK)
        k_pos = k_chunk * CHUNK + key_in_chunk
        key_ok = (s * G + slot_of_key < n_union) & (k_pos < seq_len)
        chosen = ((k_bits[None, :] >> sub_of_row) & 1) != 0""",
         """        slot = s * G + slot_of_key
        valid = slot < n_union
        k_pos = tl.load(union + slot, mask=valid, other=0) * CHUNK + key_in_chunk
        key_ok = valid & (k_pos < seq_len)
        chosen = ((tl.load(bits_row + slot, mask=valid, other=0)[None, :] >> sub_of_row) & 1) != 0""")],
    "no_loop1": [("for s in range(n_past // G):", "for s in range(0):"),
                 ("for s in range(n_past // G, tl.cdiv(n_union, G)):", "for s in range(0, tl.cdiv(n_union, G)):")],
    "resident_index": [  # the whole union row in registers once; steps pick their entries by reductions
        ("    every_key = offs_n >= 0\n",
         "    every_key = offs_n >= 0\n    e_all = tl.arange(0, 256)\n"
         "    u_all = tl.load(union + e_all, mask=e_all < n_union, other=0)\n"
         "    b_all = tl.load(bits_row + e_all, mask=e_all < n_union, other=0)\n"),
        ("_step_entries(union, bits_row, s * G, s * G + G,", "_step_resident(u_all, b_all, e_all, s * G, s * G + G,"),
        ("_step_entries(union, bits_row, s * G, n_union,", "_step_resident(u_all, b_all, e_all, s * G, n_union,")],
}


def load_variant(name, edits):
    src = SRC
    for old, new in edits:
        assert old in src, (name, old)
        src = src.replace(old, new)
    header = ("import triton\nimport triton.language as tl\nfrom sparse_attn.kernels._triton_tile import "
              "unscaled_masked_step\nfrom sparse_attn.kernels.block_sparse.triton import _unmasked_prefix\n"
              "from sparse_attn.kernels.block_sparse.small_chunks import _step_entries\n" + RESIDENT_HELPER)
    path = os.path.join(tempfile.mkdtemp(), f"gather_{name}.py")
    with open(path, "w") as fh:
        fh.write(header + src)
    spec = importlib.util.spec_from_file_location(f"gather_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod._block_sparse_fwd_gather


def run(kernel, q, k, v, cu, index, count, chunk, warps, stages):
    union, ucount, bits = sc.triton_chunk_index_to_union(index, count, chunk)
    out = torch.full_like(q, float("nan"))
    n_tiles = union.shape[2]
    kernel[(n_tiles, q.shape[1])](
        q, k, v, out, cu, union, bits, ucount, q.shape[2] ** -0.5 * LOG2E, q.shape[1], n_tiles,
        q.stride(0), q.stride(1), k.stride(0), k.stride(1), v.stride(0), v.stride(1), out.stride(0), out.stride(1),
        union.stride(0), union.stride(1), union.stride(2), ucount.stride(0), ucount.stride(1),
        GROUP=q.shape[1] // k.shape[1], HEAD_DIM=q.shape[2], CHUNK=chunk, BLOCK=64, num_warps=warps,
        num_stages=stages)
    return out


def main():
    cases = ((4096, 8, 2, 16, torch.bfloat16), (4096, 8, 2, 16, torch.float16),
             (4096, 8, 2, 32, torch.bfloat16), (1000, 8, 2, 16, torch.bfloat16))
    for length, hq, hkv, chunk, dtype in (cases if DEV == "cuda" else ((300, 4, 1, 16, torch.float32),)):
        g = torch.Generator(device=DEV).manual_seed(0)
        q, k, v = (torch.randn(length, h, 128, device=DEV, generator=g).to(dtype) for h in (hq, hkv, hkv))
        cu = torch.tensor([0, length], dtype=torch.int32, device=DEV)
        sel = BlockSparse(chunk_size=chunk, top_chunks=16).select(q, k, cu, backend="triton")
        want = naive_block_sparse_attention(q.float(), k.float(), v.float(), cu, sel.block_index, sel.block_count,
                                            chunk)
        first = (length, chunk, dtype) == (4096, 16, torch.bfloat16) or DEV != "cuda"
        for name, edits in VARIANTS.items():
            if not first and name not in ("base",) + tuple(v[0] for v in GOOD):
                continue
            kernel = load_variant(name, edits)
            launches = ((4, 3), (4, 2), (8, 3)) if first else ((4, 3),)
            for warps, stages in launches if DEV == "cuda" else ((4, 3),):
                try:
                    out = run(kernel, q, k, v, cu, sel.block_index, sel.block_count, chunk, warps, stages)
                    err = float((out.float() - want).norm() / want.norm())
                    nan = bool(out.isnan().any())
                    print(f"L={length} Hq={hq} chunk={chunk} {dtype} {name} w{warps} s{stages}: rel {err:.2e}"
                          f" nan={nan}", flush=True)
                    if first and err < 5e-3 and not nan:
                        GOOD.append((name, warps, stages))
                except Exception as error:  # noqa: BLE001
                    print(f"{name} w{warps} s{stages}: FAILED {type(error).__name__}: {str(error)[:200]}",
                          flush=True)

    if DEV != "cuda":
        return
    # the correct variants, timed at 128K on the method's selection (random inputs), with a full-shape check
    from triton.testing import do_bench
    length = 131072
    g = torch.Generator(device=DEV).manual_seed(0)
    q, k, v = (torch.randn(length, h, 128, device=DEV, generator=g).to(torch.bfloat16) for h in (32, 8, 8))
    cu = torch.tensor([0, length], dtype=torch.int32, device=DEV)
    sel = BlockSparse().select(q, k, cu, backend="triton", seq_lens=[length])
    import sparse_attn.kernels.block_sparse.triton as bst
    bst.SMALL_CHUNK_PATH = "tiles"
    ref = bst.triton_block_sparse_attention(q, k, v, cu, sel.block_index, sel.block_count, 16, max_seqlen=length)
    for name in GOOD:
        kernel = load_variant(name, VARIANTS[name[0]])
        warps, stages = name[1:]
        out = run(kernel, q, k, v, cu, sel.block_index, sel.block_count, 16, warps, stages)
        err = float((out.float() - ref.float()).norm() / ref.float().norm())
        ms = do_bench(lambda: run(kernel, q, k, v, cu, sel.block_index, sel.block_count, 16, warps, stages), rep=50)
        print(f"128K {name}: {ms:.3f} ms (incl. the union build), rel vs tiles path {err:.2e}", flush=True)


GOOD = []

if __name__ == "__main__":
    sys.exit(main())
