"""`python -m sparse_attn.integrations.lm_eval` prints the task folder, for `lm_eval --include_path`."""
from . import tasks_dir

print(tasks_dir())
