"""Package mapping for the one `sparse_attn` import namespace.

The repository keeps kernels/, integrations/ and tasks/ at the top level (easy to find), but they are installed as
`sparse_attn.kernels`, `sparse_attn.integrations` and `sparse_attn.tasks`: never as top-level `kernels` or `tasks`
(a top-level `kernels` would shadow Hugging Face's `kernels` package, which transformers imports).

It also puts `sparse_attn_autoload.pth` at the wheel root, so `attn_implementation="flexprefill"` and the `sf_*`
lm-eval tasks work in tools that never import us (`lm_eval --model hf ...`). The hook is lazy (see
sparse_attn/_autoload.py) and can be switched off with SPARSE_ATTN_AUTOLOAD=0.
"""
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

FOLDER_OF = {
    "sparse_attn": "sparse_attn",
    "sparse_attn.kernels": "kernels",
    "sparse_attn.integrations": "integrations",
    "sparse_attn.tasks": "tasks",
}
PTH_FILE = "sparse_attn_autoload.pth"


def mapped_packages():
    packages = []
    for package, folder in FOLDER_OF.items():
        packages.append(package)
        packages += [f"{package}.{sub}" for sub in find_packages(folder)]
    return sorted(set(packages))


class BuildPyWithAutoload(build_py):
    """build_py that also copies the autoload .pth file to the wheel root (site-packages)."""

    def run(self):
        super().run()
        self.copy_file(PTH_FILE, os.path.join(self.build_lib, PTH_FILE))

    def get_outputs(self, include_bytecode=True):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH_FILE)]


setup(
    packages=mapped_packages(),
    py_modules=["sparse_attn_autoload"],
    package_dir=FOLDER_OF,
    package_data={"": ["*.yaml", "*.json", "*.jsonl", "*.txt", "*.md"]},
    include_package_data=True,
    cmdclass={"build_py": BuildPyWithAutoload},
)
