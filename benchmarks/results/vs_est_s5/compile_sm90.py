"""Compile the skew window-sums kernel for sm_90 (H100 / H200) without a GPU: shared memory (limit 232448 bytes),
registers per thread and spills for each (variant, num_warps, num_stages), or the compiler error (e.g. the Triton
3.6 gather-lowering assertion). Argument divisibility by 16 is declared as the real launch specialises it.

Usage (Triton of the device: `pip install --target /tmp/tri36 --no-deps triton==3.6.0`):
    TRITON_INTERPRET=0 PYTHONPATH=/tmp/tri36:$PWD python benchmarks/results/vs_est_s5/compile_sm90.py
"""
import sys

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import sparse_attn.kernels.estimation.triton as est

H100_SHARED = 232448
POINTERS = {"QW": "*bf16", "K": "*bf16", "cu_seqlens": "*i32", "Lse": "*fp32", "Vertical": "*fp32", "Slash": "*fp32",
            "Scratch": "*fp32", "Q": "*bf16", "RowMax": "*fp32", "RowInvSum": "*fp32", "MaxOut": "*fp32",
            "SumOut": "*fp32"}
NOT_ALIGNED = ("num_q_heads", "window", "tiles_per_split", "n_chunks", "qk_scale", "keys_per_split")


def compile_kernel(fn, consts, warps, stages):
    names = list(fn.arg_names)
    sig = {n: ("constexpr" if n in consts else POINTERS.get(n, "fp32" if n == "qk_scale" else "i32")) for n in names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n not in consts and n not in NOT_ALIGNED}
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs),
                            target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))
    return kernel.metadata.shared, *ptxas_usage(kernel.asm["ptx"])


def ptxas_usage(ptx):
    """(registers per thread, spill bytes) from `ptxas -v` on the kernel's PTX (Triton's bundled ptxas)."""
    import os, re, subprocess, tempfile
    ptxas = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "ptxas")
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "k.ptx")
        open(src, "w").write(ptx)
        log = subprocess.run([ptxas, "-v", "--gpu-name", "sm_90a", src, "-o", os.path.join(tmp, "k.cubin")],
                             capture_output=True, text=True).stderr
    regs = re.search(r"Used (\d+) registers", log)
    spills = re.search(r"(\d+) bytes spill stores", log)
    return int(regs.group(1)) if regs else log[-200:], int(spills.group(1)) if spills else None


def main():
    print(f"triton {triton.__version__}")
    launches = [(4, 8, 2, 0), (4, 8, 2, 1), (4, 16, 2, 1), (2, 8, 2, 0), (2, 8, 2, 1), (2, 4, 2, 1), (1, 8, 2, 0),
                (1, 4, 2, 1), (1, 8, 2, 1)]
    if len(sys.argv) > 1:
        launches = [eval(a) for a in sys.argv[1:]]
    for skew, name in ((1, "skew"), (2, "skew_pipe"), (0, "skew_gather")):
        for nq, warps, stages, resident in launches:
            label = f"{name} (NQ, warps, stages, Q resident)={(nq, warps, stages, resident)}"
            try:
                consts = dict(GROUP=4, HEAD_DIM=128, BLOCK=64, SKEW=skew, NQ=nq, Q_RESIDENT=bool(resident))
                shared, regs, spills = compile_kernel(est._window_sums_skew, consts, warps, stages)
                verdict = "ok" if shared <= H100_SHARED else "OVER the H100 limit"
                print(f"{label}: shared={shared} {verdict} registers={regs} spill bytes={spills}", flush=True)
            except Exception as error:
                print(f"{label}: FAILED {type(error).__name__}: {str(error)[:160]}", flush=True)


if __name__ == "__main__":
    main()
