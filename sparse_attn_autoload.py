"""Lazy registration hook, imported at interpreter start by `sparse_attn_autoload.pth`.

Why: tools that never import us (`lm_eval --model hf --model_args attn_implementation=flexprefill`, a user's script
that only imports transformers) must still find our attention implementations and our `sf_*` lm-eval tasks.
Importing torch/transformers at every interpreter start would be rude, so this module only installs a
`sys.meta_path` finder; when `transformers.modeling_utils` (or `lm_eval.tasks`) has finished importing, it
imports the matching part of sparse_attn. Nothing else happens. Opt out with SPARSE_ATTN_AUTOLOAD=0.
"""
import importlib
import importlib.abc
import os
import sys

# module whose import triggers the hook -> "module:function" to call right after it finished importing
TRIGGERS = {
    "transformers.modeling_utils": "sparse_attn.integrations.transformers:register",
    "lm_eval.tasks": "sparse_attn.integrations.lm_eval:register_tasks",
}


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def __init__(self):
        self._busy = set()

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in TRIGGERS or fullname in self._busy:
            return None
        self._busy.add(fullname)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._busy.discard(fullname)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        original_exec = spec.loader.exec_module

        def exec_then_hook(module, _original=original_exec, _target=TRIGGERS[fullname]):
            _original(module)
            _run_hook(_target)

        spec.loader.exec_module = exec_then_hook
        return spec


def _run_hook(target):
    module_name, func_name = target.split(":")
    try:
        getattr(importlib.import_module(module_name), func_name)()
    except Exception as error:  # never break the host program's import; say what failed
        print(f"[sparse_attn autoload] {target} failed: {error!r} (set SPARSE_ATTN_AUTOLOAD=0 to disable)",
              file=sys.stderr)


def install():
    if os.environ.get("SPARSE_ATTN_AUTOLOAD", "1") == "0":
        return
    if any(isinstance(finder, _PostImportFinder) for finder in sys.meta_path):
        return
    import importlib.util  # noqa: F401  (needed by find_spec above)

    sys.meta_path.insert(0, _PostImportFinder())


install()
