"""Session 12: compile the Quest page selection (kernels/quest/triton.py `_select_pages_kernel`: two bits per round,
packed int64 counts, early stop) for sm_90 with the device's Triton, without a GPU.

Usage: TRITON_INTERPRET=0 PYTHONPATH=/tmp/tri36:$PWD python benchmarks/results/s12/compile_quest_select_sm90.py
"""
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sparse_attn.kernels.quest import triton as qt

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s9"))
from compile_sm90 import resources  # noqa: E402

if __name__ == "__main__":
    print(f"triton {triton.__version__}, target sm_90")
    fn = qt._select_pages_kernel
    for pages, warps in ((8192, 16), (8192, 8), (2048, 8), (32768, 16)):
        sig = {"SCORES": "*fp32", "LENS": "*i32", "OUT": "*i32"}
        sig.update({a: "i32" for a in fn.arg_names if a not in sig})
        const = dict(BLOCK_P=pages, BLOCK_OUT=triton.next_power_of_2(pages // 10 + 1))
        sig.update({a: "constexpr" for a in const})
        sig = {a: sig[a] for a in fn.arg_names}
        src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(a),): v for a, v in const.items()})
        try:
            kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
            print(f"pages {pages}, {warps} warps: {resources(kernel)[0]}", flush=True)
        except Exception as error:  # noqa: BLE001
            print(f"pages {pages}, {warps} warps: FAILED {type(error).__name__}: {str(error)[:400]}", flush=True)
