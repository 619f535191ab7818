"""What every GPU test module shares: its skip marks and the real shapes (Llama-3.1-8B heads, bf16 bound)."""
import os

import pytest
import torch

GPU_MARKS = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the device machine)"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1",
                       reason="GPU tests run compiled kernels: set TRITON_INTERPRET=0"),
]
HQ, HKV, D = 32, 8, 128  # query heads, KV heads, head dim
RATIO = 5e-3  # relative RMSE bound in bf16
