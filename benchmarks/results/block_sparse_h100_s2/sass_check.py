"""Compile the block-sparse TMA kernel for sm_90 on a machine without a GPU and count what its SASS holds.

Evidence for the round-2 change (q kept in shared memory): with q scaled in registers (the round-1 kernel, passed
as a file path argument), every wgmma k-step of Q K^T reads q from registers and ptxas puts a
`WARPGROUP.DEPBAR.LE gsb0, 0x0` (a full wait) after each HGMMA; with q in shared memory the 8 k-steps issue
back to back. Uses the local Triton's ptxas / cuobjdump (the local Triton may differ from the device's 3.6).
Usage: python sass_check.py [old_kernel_module.py]
"""
import importlib.util
import os
import subprocess
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def build(fn, bm, bn, warps, stages, extra):
    sig = {"desc_q": f"tensordesc<bf16[{bm},128]>", "desc_k": f"tensordesc<bf16[{bn},128]>",
           "desc_v": f"tensordesc<bf16[{bn},128]>", "Out": "*bf16", "cu_seqlens": "*i32", "Index": "*i32",
           "Count": "*i32", "FullCount": "*i32", "qk_scale": "fp32"}
    sig.update({n: "i32" for n in ("num_q_heads", "n_tiles_m", "stride_on", "stride_oh", "stride_ib", "stride_ih",
                                   "stride_ir", "stride_cb", "stride_ch")})
    const = dict(GROUP=4, HEAD_DIM=128, BLOCK_M=bm, BLOCK_N=bn, CHUNK=128, WARP_SPECIALIZE=False, **extra)
    sig.update({n: "constexpr" for n in const})
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))
    with open("/tmp/_bs.cubin", "wb") as fh:
        fh.write(kernel.asm["cubin"])
    res = subprocess.run([os.path.join(BIN, "cuobjdump"), "-res-usage", "/tmp/_bs.cubin"], capture_output=True,
                         text=True).stdout
    sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", "/tmp/_bs.cubin"], capture_output=True,
                          text=True).stdout
    lines = [ln for ln in sass.splitlines() if "HGMMA" in ln or "WARPGROUP.DEPBAR" in ln]
    waits_after = sum(1 for a, b in zip(lines, lines[1:]) if "HGMMA" in a and "DEPBAR" in b)
    usage = [ln.strip() for ln in res.splitlines() if "REG" in ln][0]
    return (f"{usage.split(' CONSTANT')[0]}; HGMMA {sum('HGMMA' in ln for ln in lines)}, full waits "
            f"(WARPGROUP.DEPBAR) {sum('DEPBAR' in ln for ln in lines)}, HGMMA directly followed by a wait "
            f"{waits_after}, HGMMA with A (q or p) from registers {sum('HGMMA' in ln and ', R' in ln.split('gdesc')[0][-8:] for ln in lines)}")


def load(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    from sparse_attn.kernels.block_sparse import triton as new
    print(f"triton {triton.__version__}, target sm_90")
    if len(sys.argv) > 1:
        old = load(sys.argv[1], "old_bs")
        print("round 1 (q scaled in registers), 128x128 w8 s3:", build(old._block_sparse_fwd_tma, 128, 128, 8, 3, {}))
    for stages, pipe in ((3, False), (2, False), (2, True)):
        print(f"round 2 (q in shared memory), 128x128 w8 s{stages} pipelined={pipe}:",
              build(new._block_sparse_fwd_tma, 128, 128, 8, stages, dict(PIPELINE_QK=pipe)))
