"""Check a vLLM source tree (an unpacked wheel / site-packages, no import, no GPU) against what `compat.py` uses.

    python -m sparse_attn.integrations.vllm.verify_source /path/containing/vllm [...more trees]

For each tree it parses (with `ast`) the modules the compat layer imports and reports, item by item, whether the
classes, functions, enum members, method signatures, metadata fields and KV cache shapes we rely on are there.
Exit status 1 if any item is missing. This is how releases we cannot run here (e.g. the GPU build of 0.33) are
checked; docs/vllm.md records the result per release.
"""
from __future__ import annotations

import ast
import os
import sys
from typing import Dict, List, Optional, Tuple

# (module path, class or None, what must be inside it)
CLASSES = {
    "v1/attention/backends/flash_attn.py": ("FlashAttentionBackend", "FlashAttentionMetadataBuilder",
                                            "FlashAttentionImpl", "FlashAttentionMetadata"),
    "v1/attention/backends/triton_attn.py": ("TritonAttentionBackend", "TritonAttentionMetadataBuilder",
                                             "TritonAttentionImpl", "TritonAttentionMetadata"),
    "v1/attention/backends/cpu_attn.py": ("CPUAttentionBackend", "CPUAttentionMetadataBuilder",
                                          "CPUAttentionBackendImpl", "CPUAttentionMetadata"),
}
FORWARD_ARGS = ["self", "layer", "query", "key", "value", "kv_cache", "attn_metadata", "output", "output_scale",
                "output_block_scale"]
UPDATE_ARGS = ["self", "layer", "key", "value", "kv_cache", "slot_mapping"]
METADATA_FIELDS = ("num_actual_tokens", "query_start_loc", "seq_lens", "block_table", "slot_mapping")


def _parse(root: str, rel: str) -> Optional[ast.Module]:
    path = os.path.join(root, "vllm", rel)
    if not os.path.exists(path):
        return None
    with open(path) as handle:
        return ast.parse(handle.read())


def _top(tree: ast.Module) -> Dict[str, ast.AST]:
    names: Dict[str, ast.AST] = {}
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
            names[node.name] = node
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                if isinstance(target, ast.Name):
                    names[target.id] = node
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                names[alias.asname or alias.name] = node
    return names


def _members(cls: ast.ClassDef) -> Dict[str, ast.AST]:
    out: Dict[str, ast.AST] = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            out[node.name] = node
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            out[node.target.id] = node
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    out[target.id] = node
    return out


def _args(fn: ast.FunctionDef) -> List[str]:
    return [a.arg for a in fn.args.args]


def check(root: str) -> List[Tuple[str, bool, str]]:
    """[(item, ok, detail)] for one tree."""
    results: List[Tuple[str, bool, str]] = []

    def add(item: str, ok: bool, detail: str = "") -> None:
        results.append((item, bool(ok), detail))

    version = "?"
    vt = os.path.join(root, "vllm", "_version.py")
    if os.path.exists(vt):
        for line in open(vt):
            if line.startswith("__version__") or line.startswith("version = "):
                version = line.split("=")[-1].strip().strip("'\"")
    add("version", True, version)

    backend = _parse(root, "v1/attention/backend.py")
    cg = backend and _top(backend).get("AttentionCGSupport")
    add("v1/attention/backend.py: AttentionCGSupport.NEVER", cg is not None and "NEVER" in _members(cg))

    common = backend and _top(backend).get("CommonAttentionMetadata")
    fields = _members(common) if isinstance(common, ast.ClassDef) else {}
    wanted = ("query_start_loc_cpu", "seq_lens_cpu_upper_bound", "num_reqs")
    missing = [f for f in wanted if f not in fields]
    add(f"v1/attention/backend.py: CommonAttentionMetadata fields {wanted}", not missing,
        f"missing {missing}" if missing else "")

    registry = _parse(root, "v1/attention/backends/registry.py")
    top = _top(registry) if registry else {}
    enum = top.get("AttentionBackendEnum")
    members = _members(enum) if enum is not None else {}
    for member in ("CUSTOM", "CPU_ATTN", "FLASH_ATTN", "TRITON_ATTN"):
        add(f"registry: AttentionBackendEnum.{member}", member in members)
    add("registry: register_backend()", "register_backend" in top)
    add("registry: _ATTN_OVERRIDES", "_ATTN_OVERRIDES" in top)

    selector = _parse(root, "v1/attention/selector.py")
    names = _top(selector) if selector else {}
    add("selector: _cached_get_attn_backend or get_attn_backend",
        "_cached_get_attn_backend" in names or "get_attn_backend" in names)

    for rel, (b_name, builder_name, impl_name, meta_name) in CLASSES.items():
        tree = _parse(root, rel)
        if tree is None:
            add(f"{rel}", False, "missing")
            continue
        top = _top(tree)
        for name in (b_name, builder_name, impl_name, meta_name):
            add(f"{rel}: {name}", isinstance(top.get(name), ast.ClassDef))
        impl = top.get(impl_name)
        if isinstance(impl, ast.ClassDef):
            methods = _members(impl)
            forward = methods.get("forward")
            got = _args(forward)[: len(FORWARD_ARGS)] if forward else []
            add(f"{rel}: {impl_name}.forward{tuple(FORWARD_ARGS[1:])}", got == FORWARD_ARGS, str(got))
            update = methods.get("do_kv_cache_update")
            got = _args(update) if update else []
            add(f"{rel}: {impl_name}.do_kv_cache_update{tuple(UPDATE_ARGS[1:])}", got == UPDATE_ARGS, str(got))
            if update is not None and "cpu_attn" not in rel:  # the stock K/V split of a layer's cache (GPU; on CPU
                # the stock kernel packs K/V per ISA and our backend writes its own plain layout)
                views = [ast.unparse(n.value) for n in ast.walk(update) if isinstance(n, ast.Assign)
                         and "kv_cache" in ast.unparse(n.value) and ("unbind" in ast.unparse(n.value)
                                                                      or "split" in ast.unparse(n.value))]
                add(f"{rel}: {impl_name}.do_kv_cache_update K/V views", bool(views), " | ".join(views))
        meta = top.get(meta_name)
        if isinstance(meta, ast.ClassDef):
            fields = _members(meta)
            missing = [f for f in METADATA_FIELDS if f not in fields]
            add(f"{rel}: {meta_name} fields {METADATA_FIELDS}", not missing, f"missing {missing}" if missing else "")
        builder = top.get(builder_name)
        if isinstance(builder, ast.ClassDef):
            own = "_cudagraph_support" in _members(builder)
            base = backend and _top(backend).get("AttentionMetadataBuilder")
            inherited = isinstance(base, ast.ClassDef) and "_cudagraph_support" in _members(base)
            add(f"{rel}: {builder_name}._cudagraph_support", own or inherited, "" if own else "inherited")
        backend_cls = top.get(b_name)
        if isinstance(backend_cls, ast.ClassDef) and "cpu_attn" not in rel:
            # our do_kv_cache_update hook (Quest page metadata) needs vLLM to call it apart from forward
            flag = _members(backend_cls).get("forward_includes_kv_cache_update")
            value = ast.unparse(flag.value) if flag is not None and flag.value is not None else "missing"
            add(f"{rel}: {b_name}.forward_includes_kv_cache_update is False", value == "False", value)
        if isinstance(backend_cls, ast.ClassDef):
            shape = _members(backend_cls).get("get_kv_cache_shape")
            if isinstance(shape, ast.FunctionDef):  # 0.25; later releases describe the layout elsewhere
                returns = [ast.unparse(n.value) for n in ast.walk(shape) if isinstance(n, ast.Return) and n.value]
                add(f"{rel}: {b_name}.get_kv_cache_shape", bool(returns), " | ".join(returns))

    config = _parse(root, "config/__init__.py")
    names = _top(config) if config else {}
    add("config: get_current_vllm_config, VllmConfig", "get_current_vllm_config" in names and "VllmConfig" in names)
    attention = _parse(root, "config/attention.py")
    attn_cls = attention and _top(attention).get("AttentionConfig")
    add("config/attention.py: AttentionConfig.backend", attn_cls is not None and "backend" in _members(attn_cls))
    vllm_cfg = _parse(root, "config/vllm.py")
    vc = vllm_cfg and _top(vllm_cfg).get("VllmConfig")
    vc_members = _members(vc) if vc is not None else {}
    add("config/vllm.py: VllmConfig.attention_config / additional_config / __post_init__",
        all(n in vc_members for n in ("attention_config", "additional_config", "__post_init__")))
    utils = _parse(root, "model_executor/models/utils.py")
    add("model_executor/models/utils.py: extract_layer_index", utils is not None and
        "extract_layer_index" in _top(utils))
    state = _parse(root, "distributed/parallel_state.py")
    add("distributed/parallel_state.py: get_tensor_model_parallel_rank", state is not None and
        "get_tensor_model_parallel_rank" in _top(state))
    return results


def main(argv: Optional[List[str]] = None) -> int:
    roots = argv if argv is not None else sys.argv[1:]
    if not roots:
        print(__doc__)
        return 2
    failed = False
    for root in roots:
        results = check(root)
        print(f"## {root} (vLLM {results[0][2]})")
        for item, ok, detail in results[1:]:
            failed |= not ok
            print(f"- [{'x' if ok else ' '}] {item}" + (f": `{detail}`" if detail else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
