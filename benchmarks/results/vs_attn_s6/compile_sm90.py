"""Compile the vertical-slash attention kernels for sm_90 (H100 / H200) without a GPU: registers, spills, shared
memory, and what the SASS holds (HGMMA count, warpgroup waits, bulk tensor copies), for the pre-session-6 kernel
(legacy_kernel.py), the new pointer kernel and the tma kernel's launches. Evidence that every variant compiles with
the device's Triton 3.6 and fits (shared <= 232448 bytes).

Usage (Triton of the device: `pip install --target /tmp/tri36 --no-deps triton==3.6.0`):
    TRITON_INTERPRET=0 PYTHONPATH=/tmp/tri36:$PWD python benchmarks/results/vs_attn_s6/compile_sm90.py
"""
import os
import subprocess
import sys
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sparse_attn.kernels.vertical_slash import triton as vs

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from legacy_kernel import _legacy_vertical_slash_fwd  # noqa: E402

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
SHARED_LIMIT = 232448
PTRS = {"Q": "*bf16", "K": "*bf16", "V": "*bf16", "Out": "*bf16", "cu_seqlens": "*i32", "BlockCount": "*i32",
        "FullCount": "*i32", "BlockOffset": "*i32", "ColumnCount": "*i32", "ColumnIndex": "*i32", "qk_scale": "fp32",
        "desc_q": "tensordesc<bf16[64,128]>", "desc_k": "tensordesc<bf16[64,128]>",
        "desc_v": "tensordesc<bf16[64,128]>"}


def build(fn, warps, stages, **flags):
    const = dict(GROUP=4, HEAD_DIM=128, BLOCK_M=64, BLOCK_N=64, **flags)
    sig = {n: "constexpr" if n in const else PTRS.get(n, "i32") for n in fn.arg_names}
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
            f", UTMALDG {sum('UTMALDG' in ln for ln in lines)}, LDGSTS {sum('LDGSTS' in ln for ln in lines)}")


VARIANTS = {
    "legacy pointer w4 s3": (_legacy_vertical_slash_fwd, 4, 3, {}),
    "pointer w4 s3 (default)": (vs._vertical_slash_fwd, 4, 3, dict(COL_STAGES=0)),
    "pointer w4 s3 cols1": (vs._vertical_slash_fwd, 4, 3, dict(COL_STAGES=1)),
    "pointer w4 s2": (vs._vertical_slash_fwd, 4, 2, dict(COL_STAGES=0)),
    "tma w4 s3 pipe (default)": (vs._vertical_slash_fwd_tma, 4, 3, dict(PIPELINE_QK=True, COL_STAGES=0)),
    "tma w4 s3 pipe cols1": (vs._vertical_slash_fwd_tma, 4, 3, dict(PIPELINE_QK=True, COL_STAGES=1)),
    "tma w4 s2 pipe": (vs._vertical_slash_fwd_tma, 4, 2, dict(PIPELINE_QK=True, COL_STAGES=0)),
    "tma w4 s2 pipe cols1": (vs._vertical_slash_fwd_tma, 4, 2, dict(PIPELINE_QK=True, COL_STAGES=1)),
    "tma w4 s3 pipe cols2": (vs._vertical_slash_fwd_tma, 4, 3, dict(PIPELINE_QK=True, COL_STAGES=2)),
    "tma w4 s3 nopipe": (vs._vertical_slash_fwd_tma, 4, 3, dict(PIPELINE_QK=False, COL_STAGES=0)),
    "tma w8 s2 pipe": (vs._vertical_slash_fwd_tma, 8, 2, dict(PIPELINE_QK=True, COL_STAGES=0)),
    "tma w8 s3 pipe": (vs._vertical_slash_fwd_tma, 8, 3, dict(PIPELINE_QK=True, COL_STAGES=0)),
}

if __name__ == "__main__":
    print(f"triton {triton.__version__}, target sm_90")
    for name, (fn, warps, stages, flags) in VARIANTS.items():
        try:
            print(f"{name}: {build(fn, warps, stages, **flags)}", flush=True)
        except Exception as error:
            print(f"{name}: FAILED {type(error).__name__}: {str(error)[:400]}", flush=True)
