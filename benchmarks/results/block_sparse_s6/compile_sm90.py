"""Compile the block-sparse TMA kernels for sm_90 (H100 / H200) without a GPU: registers, spills, shared memory,
and what the SASS holds (HGMMA count, full warpgroup waits, bulk tensor copies), for the default launch and each
session-6 option (peeled diagonal, persistent grid, two-per-SM launches). Evidence that every variant compiles with
the device's Triton 3.6 and fits (shared <= 232448 bytes; two programs per SM need <= ~114 KB shared and
<= 65536 / (2 * 32 * warps) registers per thread).

Usage (Triton of the device: `pip install --target /tmp/tri36 --no-deps triton==3.6.0`):
    TRITON_INTERPRET=0 PYTHONPATH=/tmp/tri36:$PWD python benchmarks/results/block_sparse_s6/compile_sm90.py
"""
import os
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sparse_attn.kernels.block_sparse import triton as bs

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
SHARED_LIMIT = 232448
INTS = ("num_q_heads", "n_tiles_m", "n_bh", "n_items", "stride_on", "stride_oh", "stride_ib", "stride_ih", "stride_ir",
        "stride_cb", "stride_ch")


def build(launch):
    bm, bn, warps, stages, ws, pipe, peel, persistent = bs._full_launch(launch)
    fn = bs._block_sparse_fwd_tma_persistent if persistent else bs._block_sparse_fwd_tma
    sig = {"desc_q": f"tensordesc<bf16[{bm},128]>", "desc_k": f"tensordesc<bf16[{bn},128]>",
           "desc_v": f"tensordesc<bf16[{bn},128]>", "Out": "*bf16", "cu_seqlens": "*i32", "Index": "*i32",
           "Count": "*i32", "Order": "*i32", "qk_scale": "fp32"}
    sig.update({n: "i32" for n in INTS})
    const = dict(GROUP=4, HEAD_DIM=128, BLOCK_M=bm, BLOCK_N=bn, CHUNK=128, WARP_SPECIALIZE=ws, PIPELINE_QK=pipe,
                 PEEL_DIAG=peel)
    sig.update({n: "constexpr" for n in const})
    sig = {n: sig[n] for n in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        with open(cubin, "wb") as fh:
            fh.write(kernel.asm["cubin"])
        res = subprocess.run([os.path.join(BIN, "cuobjdump"), "-res-usage", cubin], capture_output=True,
                             text=True).stdout
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", cubin], capture_output=True, text=True).stdout
    usage = [ln.strip() for ln in res.splitlines() if "REG" in ln][0].split(" CONSTANT")[0]
    lines = sass.splitlines()
    shared = kernel.metadata.shared
    return (f"{usage}; shared {shared} B ({'ok' if shared <= SHARED_LIMIT else 'OVER'}); "
            f"HGMMA {sum('HGMMA' in ln for ln in lines)}, WARPGROUP.DEPBAR {sum('WARPGROUP.DEPBAR' in ln for ln in lines)}"
            f", UTMALDG {sum('UTMALDG' in ln for ln in lines)}")


LAUNCHES = {
    "default tma 128x128 w8 s2 pipe": (128, 128, 8, 2, False, True),
    "tma 128x128 w8 s2 pipe peel": (128, 128, 8, 2, False, True, True, 0),
    "tma 128x128 w8 s2 pipe pers1": (128, 128, 8, 2, False, True, False, 1),
    "tma 128x128 w8 s2 pipe peel pers1": (128, 128, 8, 2, False, True, True, 1),
    "tma 64x64 w4 s3 pipe peel": (64, 64, 4, 3, False, True, True, 0),
    "tma 64x64 w4 s2 pipe peel": (64, 64, 4, 2, False, True, True, 0),
    "tma 64x64 w4 s2 pipe peel pers2": (64, 64, 4, 2, False, True, True, 2),
    "tma 64x128 w4 s2 pipe peel": (64, 128, 4, 2, False, True, True, 0),
    "tma 64x64 w4 s3 pipe": (64, 64, 4, 3, False, True),
}

if __name__ == "__main__":
    print(f"triton {triton.__version__}, target sm_90")
    for name, launch in LAUNCHES.items():
        try:
            print(f"{name}: {build(launch)}", flush=True)
        except Exception as error:
            print(f"{name}: FAILED {type(error).__name__}: {str(error)[:300]}", flush=True)
