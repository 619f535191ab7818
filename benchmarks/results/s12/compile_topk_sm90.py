"""Session 12: compile the block-sparse row top-k (kernels/block_sparse/select_triton.py) for sm_90 with the
device's Triton, without a GPU: does it build (the early-stop `while` loop, two row segments), registers, spills.

Usage: TRITON_INTERPRET=0 PYTHONPATH=/tmp/tri36:$PWD python benchmarks/results/s12/compile_topk_sm90.py
(/tmp/tri36 = `pip install --target /tmp/tri36 --no-deps triton==3.6.0`)
"""
import os
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sparse_attn.kernels.block_sparse import select_triton as st

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s9"))
from compile_sm90 import resources  # noqa: E402


def build(n):
    fn = st._block_topk_kernel
    npa, npb = st.row_segments(n)
    sig = {"Scores": "*fp32", "Out": "*i32", "BlocksPerSample": "*i64"}
    sig.update({a: "i32" for a in fn.arg_names if a not in sig})
    const = dict(NPA=npa, NPB=npb)
    sig.update({a: "constexpr" for a in const})
    sig = {a: sig[a] for a in fn.arg_names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(a),): v for a, v in const.items()})
    warps = 8 if npa + npb >= 4096 else 4
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps))
    usage, _ = resources(kernel)
    return f"n={n} (NPA {npa}, NPB {npb}, {warps} warps): {usage}"


if __name__ == "__main__":
    print(f"triton {triton.__version__}, target sm_90")
    for n in (200, 1000, 1100, 4096, 4200, 8000, 8192, 16384):
        try:
            print(build(n), flush=True)
        except Exception as error:  # noqa: BLE001
            print(f"n={n}: FAILED {type(error).__name__}: {str(error)[:400]}", flush=True)
