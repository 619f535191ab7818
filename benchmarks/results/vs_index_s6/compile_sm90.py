"""Compile `_build_index` for sm_90 without a GPU (the device's Triton 3.6): registers, and the global stores in the
SASS (STG.E = 4-byte scalar, STG.E.128 = 16-byte vector) for VEC 1 (scalar stores) and VEC 8 (grouped stores).

Usage: TRITON_INTERPRET=0 PYTHONPATH=/tmp/tri36:$PWD python benchmarks/results/vs_index_s6/compile_sm90.py
"""
import os
import re
import subprocess
import tempfile
from collections import Counter

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

from sparse_attn.kernels.vertical_slash import triton as vs

BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
PTRS = {n: "*i32" for n in ("cu_seqlens", "Vert", "VertCount", "Slash", "SlashCount", "BlockCount", "BlockOffset",
                            "ColumnCount", "ColumnIndex")}
DIV16 = ("stride_bob", "stride_boh", "stride_bor", "stride_cib", "stride_cih", "stride_cir", "block_width",
         "column_width", "Vert", "Slash", "BlockOffset", "ColumnIndex", "BlockCount", "ColumnCount")

for vec in (1, 4):
    fn = vs._build_index
    const = dict(BLOCK_R=128, STORE=True, VEC=vec)
    sig = {n: "constexpr" if n in const else PTRS.get(n, "i32") for n in fn.arg_names}
    attrs = {(fn.arg_names.index(n),): [["tt.divisibility", 16]] for n in DIV16}
    src = ASTSource(fn=fn, signature=sig, constexprs={(fn.arg_names.index(k),): v for k, v in const.items()},
                    attrs=attrs)
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=dict(num_warps=4))
    with tempfile.TemporaryDirectory() as tmp:
        cubin = os.path.join(tmp, "k.cubin")
        open(cubin, "wb").write(kernel.asm["cubin"])
        sass = subprocess.run([os.path.join(BIN, "cuobjdump"), "-sass", cubin], capture_output=True, text=True).stdout
        res = subprocess.run([os.path.join(BIN, "cuobjdump"), "-res-usage", cubin], capture_output=True, text=True).stdout
    stores = Counter(m.group(1) for m in re.finditer(r"\b(STG[.\w]*)", sass))
    shared = sum(1 for ln in sass.splitlines() if re.search(r"\b(STS|LDS)\b", ln))
    usage = [ln.strip() for ln in res.splitlines() if "REG" in ln][0].split(" CONSTANT")[0]
    ttgir = kernel.asm["ttgir"]
    print(f"VEC={vec}: {usage}; stores {dict(stores)}; shared-memory ops {shared}; "
          f"convert_layout in TTGIR {ttgir.count('convert_layout')}")
