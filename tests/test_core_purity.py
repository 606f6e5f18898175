"""The core ring stays pure: no I/O, no Hydra/Ray/W&B/Jinja2, and ``import thermojax`` stays light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import thermojax

CORE_MODULES = [
    "quant",
    "timegroups",
    "markov",
    "smoothing",
    "adaptive",
    "schedule_metrics",
    "transition",
]
# Core modules that `import thermojax` loads eagerly; transition needs optax, so it loads on first use.
EAGER_MODULES = [m for m in CORE_MODULES if m != "transition"]
NUMERIC_EXTRAS = {"transition": {"optax"}}
PACKAGE_DIR = Path(thermojax.__file__).parent
HEAVY = ("hydra", "omegaconf", "ray", "wandb", "jinja2", "flax", "optax", "orbax")
IO_MODULES = {
    "os",
    "io",
    "sys",
    "pathlib",
    "shutil",
    "tempfile",
    "json",
    "pickle",
    "csv",
    "subprocess",
    "socket",
    "urllib",
    "http",
    "requests",
    "logging",
    "safetensors",
}
ALLOWED_TOP_LEVEL = {"__future__", "dataclasses", "functools", "itertools", "math", "collections"}
ALLOWED_TOP_LEVEL |= {"jax", "numpy", "thermojax"}
IO_BUILTINS = {"open", "print", "input", "exec", "eval", "__import__"}


def imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_imports_only_numeric_libraries(module):
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text())
    modules = imported_modules(tree)
    top = {name.split(".")[0] for name in modules}
    assert top <= ALLOWED_TOP_LEVEL | NUMERIC_EXTRAS.get(module, set()), (
        f"{module}.py imports {sorted(top - ALLOWED_TOP_LEVEL)}"
    )
    assert not top & IO_MODULES
    internal = {name for name in modules if name.startswith("thermojax")}
    assert internal <= {f"thermojax.{m}" for m in CORE_MODULES}, internal


@pytest.mark.parametrize("module", CORE_MODULES)
def test_core_module_calls_no_io_builtins(module):
    tree = ast.parse((PACKAGE_DIR / f"{module}.py").read_text())
    called = {
        node.func.id
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not called & IO_BUILTINS, f"{module}.py calls {sorted(called & IO_BUILTINS)}"


def test_import_thermojax_loads_no_pipeline_or_edge_libraries():
    code = (
        "import sys, thermojax\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('thermojax'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    loaded = set(out[0].split(","))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    ours = set(out[1].split(","))
    light = {"thermojax", "thermojax.errors", "thermojax.paths"}
    assert ours <= light | {f"thermojax.{m}" for m in EAGER_MODULES}, ours


def test_public_api_is_explicit():
    expected = {
        "quantize",
        "dequantize",
        "fake_quantize",
        "QTensor",
        "activation_params",
        "fake_quantize_activations",
        "cosine_similarity",
        "mse",
        "sqnr_db",
        "storage_bytes",
        "fp32_bytes",
        "uniform_edges",
        "group_ranges",
        "group_of",
        "group_activation_params",
        "expand_to_timesteps",
        "markov_metrics",
        "MarkovMetrics",
        "smooth_boundaries",
        "smooth_groups",
        "adaptive_edges",
        "segmentation_objective",
        "schedule_metrics",
        "ScheduleMetrics",
        "optimize_transitions",
        "TransitionResult",
    }
    assert expected <= set(thermojax.__all__)
    assert all(hasattr(thermojax, name) for name in thermojax.__all__)
