"""Session 9: compile the block-sparse TMA kernel for sm_90 without a GPU, with the start-up options DIAG_FIRST and
L2_PREFETCH (see kernels/block_sparse/triton.py): registers, spills, shared memory, SASS counts (HGMMA, bulk tensor
copies, CCTL / prefetch lines). Evidence that each variant builds with the device's Triton 3.6 before a device call.

Needs the session-9 experimental kernel (DIAG_FIRST / L2_PREFETCH; removed after it lost, see bs_startup.py).
Output of the one run: all four variants 255 registers, no spills, 196640 B shared, 48 HGMMA, 11 UTMALDG; the
prefetch variants add 4 CCTL prefetch instructions.

Usage: TRITON_INTERPRET=0 PYTHONPATH=/tmp/tri36:$PWD python benchmarks/results/s9/compile_sm90.py
"""
import os
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sparse_attn.kernels.block_sparse import triton as bs

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
INTS = ("num_q_heads", "n_tiles_m", "stride_kn", "stride_vn", "stride_on", "stride_oh", "stride_ib", "stride_ih",
        "stride_ir", "stride_cb", "stride_ch")
ALIGNED = ("K", "V", "Out", "stride_kn", "stride_vn", "stride_on", "stride_oh")


def build(diag_first, prefetch, bm=128, bn=128, warps=8, stages=2):
    fn = bs._block_sparse_fwd_tma
    sig = {"desc_q": f"tensordesc<bf16[{bm},128]>", "desc_k": f"tensordesc<bf16[{bn},128]>",
           "desc_v": f"tensordesc<bf16[{bn},128]>", "K": "*bf16", "V": "*bf16", "Out": "*bf16",
           "cu_seqlens": "*i32", "Index": "*i32", "Count": "*i32", "qk_scale": "fp32"}
    sig.update({n: "i32" for n in INTS})
    const = dict(GROUP=4, HEAD_DIM=128, BLOCK_M=bm, BLOCK_N=bn, CHUNK=128, WARP_SPECIALIZE=False, PIPELINE_QK=True,
                 PEEL_DIAG=False, DIAG_FIRST=diag_first, L2_PREFETCH=prefetch)
    sig.update({n: "constexpr" for n in const})
    sig = {n: sig[n] for n in fn.arg_names}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in ALIGNED}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()},
                    attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))
    usage, sass = resources(kernel)
    count = lambda op: sum(op in ln for ln in sass.splitlines())  # noqa: E731
    return (f"{usage}; shared {kernel.metadata.shared} B; HGMMA {count('HGMMA')}, UTMALDG {count('UTMALDG')}, "
            f"CCTL {count('CCTL')}, prefetch lines {count('PREFETCH') + count('CCTL.E.PF2')}")


def resources(kernel):
    """(cuobjdump's register / stack / shared line, the SASS text) of a compiled kernel (session 10 uses it too)."""
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as fh:
            fh.write(kernel.asm["cubin"])
        res = subprocess.run([os.path.join(BIN, "cuobjdump"), "-res-usage", cubin], capture_output=True,
                             text=True).stdout
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", cubin], capture_output=True, text=True).stdout
    return [ln.strip() for ln in res.splitlines() if "REG" in ln][0].split(" CONSTANT")[0], sass


if __name__ == "__main__":
    print(f"triton {triton.__version__}, target sm_90")
    for diag_first in (False, True):
        for prefetch in (False, True):
            name = f"diag_first={diag_first} l2_prefetch={prefetch}"
            try:
                print(f"{name}: {build(diag_first, prefetch)}", flush=True)
            except Exception as error:
                print(f"{name}: FAILED {type(error).__name__}: {str(error)[:600]}", flush=True)
