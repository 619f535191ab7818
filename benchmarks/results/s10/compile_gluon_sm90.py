"""Session 10: compile the Gluon block-sparse kernel (kernels/block_sparse/gluon.py) for sm_90 without a GPU:
registers, spills, shared memory and SASS counts per launch variant, before any device call.

Usage: TRITON_INTERPRET=0 PYTHONPATH=/tmp/tri36:$PWD python benchmarks/results/s10/compile_gluon_sm90.py
(logs/local/compile_sm90_triton36.log; without /tmp/tri36, the venv's Triton 3.9: compile_sm90_triton39.log)
(/tmp/tri36 = `pip install --target /tmp/tri36 --no-deps triton==3.6.0`, the device's Triton).
"""
import os
import sys

import triton

from sparse_attn.kernels.block_sparse import gluon as g

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "s9"))
from compile_sm90 import resources  # noqa: E402  (cuobjdump resource line and SASS of a compiled kernel)


def build(dim=128, chunk=128, **launch):
    kernel = g.compile_for_sm90(head_dim=dim, chunk_size=chunk, **launch)
    usage, sass = resources(kernel)
    count = lambda op: sum(op in ln for ln in sass.splitlines())  # noqa: E731
    if "--sass" in sys.argv:
        name = "_".join(f"{k}{v}" for k, v in sorted(dict(launch, dim=dim, chunk=chunk).items()))
        with open(f"/tmp/gluon_{name}.sass", "w") as fh:
            fh.write(sass)
        with open(f"/tmp/gluon_{name}.ptx", "w") as fh:
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
