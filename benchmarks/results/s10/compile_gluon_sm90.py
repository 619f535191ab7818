"""Session 10: compile the Gluon block-sparse kernel (kernels/block_sparse/gluon.py) for sm_90 without a GPU:
registers, spills, shared memory and SASS counts per launch variant, before any device call.

Usage: TRITON_INTERPRET=0 PYTHONPATH=/tmp/tri36:$PWD python benchmarks/results/s10/compile_gluon_sm90.py
(logs/local/compile_sm90_triton36.log; without /tmp/tri36, the venv's Triton 3.9: compile_sm90_triton39.log)
(/tmp/tri36 = `pip install --target /tmp/tri36 --no-deps triton==3.6.0`, the device's Triton).
"""
import os
import sys

import torch
import triton
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import BaseBackend, GPUTarget
from triton.experimental.gluon._runtime import GluonASTSource

from sparse_attn.kernels.block_sparse import gluon as g

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s9"))
from compile_sm90 import resources  # noqa: E402  (cuobjdump resource line and SASS of a compiled kernel)
INTS = ("num_q_heads", "n_bh", "n_items", "stride_on", "stride_oh", "stride_ib", "stride_ih", "stride_ir",
        "stride_cb", "stride_ch")


def desc_type(rows, dim):
    t = torch.empty(1024, 8, dim, dtype=torch.bfloat16)
    return native_specialize_impl(BaseBackend, g._descriptor(t, rows), False, True, True)[0]


def build(k_stages=3, v_stages=3, q_bufs=1, dim=128, chunk=128, consumer_regs=240, producer_regs=24, pingpong=False,
          sorted=False):
    fn = g._block_sparse_fwd_ws
    sig = {"desc_q": desc_type(g.WG_ROWS.value, dim), "desc_k": desc_type(g.BLOCK_N.value, dim),
           "desc_v": desc_type(g.BLOCK_N.value, dim), "Out": "*bf16", "cu_seqlens": "*i32", "Index": "*i32",
           "Count": "*i32", "Order": "*i32", "qk_scale": "fp32"}
    sig.update({n: "i32" for n in INTS})
    const = dict(GROUP=4, HEAD_DIM=dim, CHUNK=chunk, K_STAGES=k_stages, V_STAGES=v_stages, Q_BUFS=q_bufs,
                 CONSUMER_REGS=consumer_regs,
                 PRODUCER_REGS=producer_regs, PINGPONG=pingpong,
                 SORTED=sorted)
    sig.update({n: "constexpr" for n in const})
    sig = {n: sig[n] for n in fn.arg_names}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in ("Out", "stride_on", "stride_oh")}
    src = GluonASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()},
                         attrs=attrs)
    maxnreg = (2 * consumer_regs + producer_regs) // 3 // 8 * 8
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4, maxnreg=maxnreg))
    usage, sass = resources(kernel)
    count = lambda op: sum(op in ln for ln in sass.splitlines())  # noqa: E731
    if "--sass" in sys.argv:
        with open(f"/tmp/gluon_k{k_stages}v{v_stages}_q{q_bufs}_d{dim}.sass", "w") as fh:
            fh.write(sass)
        with open(f"/tmp/gluon_k{k_stages}v{v_stages}_q{q_bufs}_d{dim}.ptx", "w") as fh:
            fh.write(kernel.asm["ptx"])
    return (f"{usage}; shared {kernel.metadata.shared} B; HGMMA {count('HGMMA')}, UTMALDG {count('UTMALDG')}, "
            f"SETMAXNREG {count('SETMAXNREG') + count('USETMAXREG')}, local ld/st {count('LDL') + count('STL')}")


if __name__ == "__main__":
    print(f"triton {triton.__version__}, target sm_90")
    for cfg in (dict(), dict(sorted=True), dict(pingpong=True), dict(k_stages=4, v_stages=2),
                dict(k_stages=3, v_stages=2, q_bufs=2),
                dict(dim=64), dict(chunk=256)):
        try:
            print(f"{cfg}: {build(**cfg)}", flush=True)
        except Exception as error:
            print(f"{cfg}: FAILED {type(error).__name__}: {str(error)[:3000]}", flush=True)
