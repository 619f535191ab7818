"""Session 14: compile the changed Quest kernels for sm_90 with the device's Triton, without a GPU (the selection
kernel writing its reads, the one-launch cache append), so that a device call does not find a compile error.

Usage: TRITON_INTERPRET=0 PYTHONPATH=/tmp/tri36:$PWD python benchmarks/results/s14/compile_quest_sm90.py
"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sparse_attn.kernels.quest import triton as quest


def build(fn, pointers, const, warps):
    sig = dict(pointers)
    sig.update({n: "constexpr" for n in const})
    sig = {n: sig.get(n, "i32") for n in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    return f"compiled, shared {kernel.metadata.shared} B, regs {kernel.n_regs if hasattr(kernel, 'n_regs') else '?'}"


if __name__ == "__main__":
    print(f"triton {triton.__version__}, target sm_90")
    for reads in (False, True):
        ptrs = {"SCORES": "*fp32", "LENS": "*i32", "OUT": "*i32", "TOKENS_OUT": "*i32",
                "SPARSITY_OUT": "*fp32" if reads else "*i32"}
        print(f"select reads={reads}:", build(quest._select_pages_kernel, ptrs,
                                              dict(BLOCK_P=8192, BLOCK_OUT=128, WRITE_READS=reads), 16))
    ptrs = {n: "*bf16" for n in ("OUT", "Q", "K", "V")}
    ptrs.update({"O_PART": "*fp32", "LSE_PART": "*fp32", "LSE_OUT": "*fp32", "LENS": "*i32", "PAGE_INDEX": "*i32",
                 "COUNTERS": "*i32", "scale_log2e": "fp32"})
    for fused in (False, True):
        const = dict(ROWS=4, GROUP=4, BLOCK_G=16, HEAD_DIM=128, BLOCK_N=128, PREFETCH_INDEX=False, SINGLE_SPLIT=False,
                     WRITE_LSE=False, DOT_F32=False, FUSE_COMBINE=fused)
        print(f"quest split fused={fused}:", build(quest._paged_decode_split_kernel, ptrs, const, 4))
    for lens in ("*i32", "*i64"):
        ptrs = {n: "*bf16" for n in ("KEYS", "VALUES", "PMIN", "PMAX", "K_NEW", "V_NEW")}
        ptrs["LENS"] = lens
        print(f"append lens {lens}:", build(quest._append_token_kernel, ptrs, dict(NUM_KV_HEADS=8, HEAD_DIM=128), 1))
