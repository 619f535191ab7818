"""Compile the "resident" window-sums kernel for sm_90 (H100) without a GPU, for the launch plans
`resident_plan` picks and the launches the profile sweeps: reports shared memory (limit 232448 bytes) or the
compiler error. Argument divisibility by 16 is declared as the real launch specialises it (without it the pipeliner
does not use cp.async and the shared-memory numbers come out far too small).

Usage (Triton version of the device: `pip install --target /tmp/tri36 --no-deps triton==3.6.0`):
    TRITON_INTERPRET=0 PYTHONPATH=/tmp/tri36:$PWD python benchmarks/results/vs_s3/compile_sm90.py
"""
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

import sparse_attn.kernels.estimation.triton as est

H100_SHARED = 232448
POINTERS = {"QWin": "*bf16", "K": "*bf16", "cu_seqlens": "*i32", "RowMax": "*fp32", "RowInvSum": "*fp32",
            "Vertical": "*fp32", "Slash": "*fp32"}
NOT_ALIGNED = ("num_q_heads", "window", "tiles_per_split")


def compile_plan(chunk, n_chunks, bands, warps, stages):
    fn = est._window_sums_resident
    consts = dict(GROUP=4, HEAD_DIM=128, CHUNK=chunk, N_CHUNKS=n_chunks, BANDS=bands)
    names = list(fn.arg_names)
    sig = {n: ("constexpr" if n in consts else POINTERS.get(n, "i32")) for n in names}
    attrs = {(i,): [["tt.divisibility", 16]] for i, n in enumerate(names) if n not in consts and n not in NOT_ALIGNED}
    kernel = triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts, attrs=attrs),
                            target=GPUTarget("cuda", 90, 32), options=dict(num_warps=warps, num_stages=stages))
    return kernel.metadata.shared


def main():
    print(f"triton {triton.__version__}")
    plans = []
    for window in (1, 64, 100, 256, 300, 512, 1024):
        plans.append((f"plan window={window}", est.resident_plan(window)))
    saved = est.RESIDENT_LAUNCH
    for launch in ((4, 2), (8, 3), (8, 1)):  # the profile's sweep
        est.RESIDENT_LAUNCH = launch
        for window in (256, 512):
            plans.append((f"sweep {launch} window={window}", est.resident_plan(window)))
    est.RESIDENT_LAUNCH = saved
    for label, plan in plans:
        try:
            shared = compile_plan(*plan)
            verdict = "ok" if shared <= H100_SHARED else "OVER the H100 limit"
            print(f"{label}: (chunk, chunks, bands, warps, stages)={plan} shared={shared} {verdict}", flush=True)
        except Exception as error:
            print(f"{label}: {plan} FAILED {type(error).__name__}: {str(error)[:120]}", flush=True)


if __name__ == "__main__":
    main()
