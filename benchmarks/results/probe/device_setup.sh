# Sourced at the start of every device command (H100 machine: python3 with torch/transformers, no install of ours):
# put the repo on PYTHONPATH, link the sub-packages as `pip install -e .` would map them, install the carried
# lm-eval wheels (.whl/, not committed) into /tmp/site.
export PYTHONPATH=$PWD TRITON_INTERPRET=0 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
for d in kernels integrations tasks; do ln -sfn $PWD/$d sparse_attn/$d; done
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=$PWD:/tmp/site
fi
