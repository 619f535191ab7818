"""Session 11: compile the chunk-16/32 gather kernel and the union builder (kernels/block_sparse/small_chunks.py)
for sm_90 without a GPU: registers, spills, shared memory, HGMMA / cp.async counts per launch.

Usage: TRITON_INTERPRET=0 PYTHONPATH=/tmp/tri36:$PWD python benchmarks/results/s11/compile_gather_sm90.py
(/tmp/tri36 = `pip install --target /tmp/tri36 --no-deps triton==3.6.0`, the device's Triton)
"""
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sparse_attn.kernels.block_sparse import small_chunks as sc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s9"))
from compile_sm90 import resources  # noqa: E402

INTS = ("num_q_heads", "n_tiles_m", "stride_qn", "stride_qh", "stride_kn", "stride_kh", "stride_vn", "stride_vh",
        "stride_on", "stride_oh", "stride_ub", "stride_uh", "stride_ur", "stride_cb", "stride_ch")
ALIGNED = ("Q", "K", "V", "Out", "stride_qn", "stride_kn", "stride_vn", "stride_on", "stride_qh", "stride_kh",
           "stride_vh", "stride_oh", "stride_ub", "stride_uh", "stride_ur")


def count(sass, op):
    return sum(op in ln for ln in sass.splitlines())


def build_gather(chunk=16, warps=4, stages=3, dim=128):
    fn = sc._block_sparse_fwd_gather
    sig = {n: "*bf16" for n in ("Q", "K", "V", "Out")}
    sig.update({n: "*i32" for n in ("cu_seqlens", "Union", "Bits", "UnionCount")})
    sig["qk_scale"] = "fp32"
    sig.update({n: "i32" for n in INTS})
    const = dict(GROUP=4, HEAD_DIM=dim, CHUNK=chunk, BLOCK=64)
    sig.update({n: "constexpr" for n in const})
    sig = {n: sig[n] for n in fn.arg_names}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in ALIGNED}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()},
                    attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))
    usage, sass = resources(kernel)
    return (f"{usage}; shared {kernel.metadata.shared} B; HGMMA {count(sass, 'HGMMA')}, LDGSTS "
            f"{count(sass, 'LDGSTS')}, local ld/st {count(sass, 'LDL') + count(sass, 'STL')}")


if __name__ == "__main__":
    print(f"triton {triton.__version__}, target sm_90")
    for cfg in (dict(), dict(stages=2), dict(stages=4), dict(chunk=32), dict(dim=64), dict(warps=8)):
        try:
            print(f"gather {cfg}: {build_gather(**cfg)}", flush=True)
        except Exception as error:  # noqa: BLE001
            print(f"gather {cfg}: FAILED {type(error).__name__}: {str(error)[:300]}", flush=True)
