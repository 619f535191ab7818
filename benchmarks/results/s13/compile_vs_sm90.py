"""Session 13: compile the vertical-slash attention kernels (pointer and TMA) for sm_90 with the device's Triton,
without a GPU, with and without COL_RUNS (column groups of 64 consecutive keys folded as unmasked blocks), the
column loop following num_stages (col_stages 0) or not pipelined (1): registers, spills, shared memory, HGMMA and
bulk-copy counts.

The COL_RUNS variant was reverted after measuring: apply benchmarks/results/s13/column_runs.patch first.

Usage: TRITON_INTERPRET=0 PYTHONPATH=/tmp/tri36:$PWD python benchmarks/results/s13/compile_vs_sm90.py
"""
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sparse_attn.kernels.vertical_slash import triton as vs

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s9"))
from compile_sm90 import resources  # noqa: E402

POINTERS = ("Q", "K", "V", "Out")
INDEX = ("cu_seqlens", "BlockCount", "BlockOffset", "ColumnCount", "ColumnIndex")


def build(tma, runs, col_stages, warps=4, stages=3):
    fn = vs._vertical_slash_fwd_tma if tma else vs._vertical_slash_fwd
    sig = {n: "*bf16" for n in POINTERS}
    sig.update({n: "*i32" for n in INDEX})
    sig.update({"desc_q": "tensordesc<bf16[64,128]>", "desc_k": "tensordesc<bf16[64,128]>",
                "desc_v": "tensordesc<bf16[64,128]>", "qk_scale": "fp32"})
    const = dict(GROUP=4, HEAD_DIM=128, BLOCK_M=64, BLOCK_N=64, COL_STAGES=col_stages, COL_RUNS=runs)
    if tma:
        const["PIPELINE_QK"] = False
    sig.update({n: "constexpr" for n in const})
    sig = {n: sig.get(n, "i32") for n in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))
    usage, sass = resources(kernel)
    count = lambda op: sum(op in ln for ln in sass.splitlines())  # noqa: E731
    return f"{usage}; shared {kernel.metadata.shared} B; HGMMA {count('HGMMA')}, UTMALDG {count('UTMALDG')}"


if __name__ == "__main__":
    print(f"triton {triton.__version__}, target sm_90")
    for tma in (False, True):
        for runs in (False, True):
            for col_stages in (0, 1):
                name = f"{'tma' if tma else 'pointer'} col_runs={runs} col_stages={col_stages}"
                try:
                    print(f"{name}: {build(tma, runs, col_stages)}", flush=True)
                except Exception as error:  # noqa: BLE001
                    print(f"{name}: FAILED {type(error).__name__}: {str(error)[:800]}", flush=True)
