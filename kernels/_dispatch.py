"""Backend choice shared by every kernel dispatcher (`kernels/<op>/__init__.py`).

backend "auto": the Triton kernel for CUDA tensors, the PyTorch reference for CPU tensors; "naive" / "triton" force
one ("triton" on CPU tensors needs TRITON_INTERPRET=1). Nothing falls back silently: a CUDA tensor (or a forced
"triton") whose Triton module cannot be imported raises with the fix.
"""
import importlib

import torch

BACKENDS = ("auto", "naive", "triton")


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """"naive" or "triton" for this request and device."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'auto', 'naive' or 'triton', got {backend!r}")
    if backend == "auto":
        return "triton" if tensor.is_cuda else "naive"
    return backend


def triton_module(package: str, what: str):
    """Import `<package>.triton` (the op's Triton kernels), or raise naming the fix. `what` names them in the error."""
    try:
        return importlib.import_module(f"{package}.triton")
    except ImportError as error:  # never fall back to the slow reference silently
        raise ImportError(
            f"{what} unavailable ({error}); install Triton (pip install 'sparse-attn[triton]') or pass "
            f"backend='naive' to run the PyTorch reference on purpose"
        ) from error


def triton_module_for(package: str, what: str, tensor: torch.Tensor, backend: str):
    """The op's Triton module for this request, or None when the reference should run."""
    if resolve_backend(backend, tensor) == "naive":
        return None
    return triton_module(package, what)
