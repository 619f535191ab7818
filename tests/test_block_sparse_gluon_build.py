"""The Gluon block-sparse kernel (kernels/block_sparse/gluon.py) has no CPU-interpreter path. This test compiles it
for sm_90 with the installed Triton (no GPU needed: the wheel's own ptxas), so CI catches a kernel that no longer
builds or lost its warp specialization, asynchronous matrix products or bulk copies. Its numerics are tested on the
GPU (tests/gpu/test_block_sparse_gpu.py, Hopper only).

The build runs in a child process with TRITON_INTERPRET=0: the CPU tests set TRITON_INTERPRET=1, under which
`@gluon.jit` functions become interpreter objects that the compiler cannot take.
"""
import json
import os
import subprocess
import sys

import pytest

HOPPER_SHARED_MEMORY = 232448  # bytes per block on sm_90 (227 KB)

BUILD = """
import json, sys
from sparse_attn.kernels.block_sparse.gluon import compile_for_sm90
kernel = compile_for_sm90(**json.loads(sys.argv[1]))
ptx = kernel.asm["ptx"]
print(json.dumps(dict(wgmma=ptx.count("wgmma.mma_async"), waits=ptx.count("wgmma.wait_group"),
                      setmaxnreg=ptx.count("setmaxnreg"), bulk=ptx.count("cp.async.bulk.tensor"),
                      shared=kernel.metadata.shared)))
"""


@pytest.mark.parametrize("options", [
    dict(head_dim=128),
    dict(head_dim=64),
    dict(head_dim=128, sorted=True, pingpong=True, k_stages=2, v_stages=2, q_bufs=2),
])
def test_gluon_kernel_builds_for_hopper(options):
    env = dict(os.environ, TRITON_INTERPRET="0")
    done = subprocess.run([sys.executable, "-c", BUILD, json.dumps(options)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    got = json.loads(done.stdout.strip().splitlines()[-1])
    # per consumer warpgroup: Q K^T of the first tile and of the loop (head_dim / 16 k-steps each), P V of the loop
    # and of the last tile (128 / 16 k-steps each); two consumers
    assert got["wgmma"] == 2 * (2 * options["head_dim"] // 16 + 2 * 128 // 16)
    assert got["waits"] > 0, "the matrix products must be asynchronous"
    assert got["setmaxnreg"] > 0, "warp specialization must hand the producer's registers to the consumers"
    assert got["bulk"] >= 3, "Q, K and V must come through bulk tensor copies"
    assert 0 < got["shared"] <= HOPPER_SHARED_MEMORY
