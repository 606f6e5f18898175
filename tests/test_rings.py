"""The rings are folders, and each folder is held to its imports.

- ``thermojax/core/**``: pure JAX; imports only jax, numpy, optax and a few side-effect-free
  standard modules, no file I/O, no other thermojax ring.
- ``thermojax/models/**``: may use the core and file formats, never the pipeline or the edges.
- ``thermojax/pipeline/**``: no Hydra, OmegaConf, Jinja2, rich, W&B or Ray, no ``cli`` or
  ``report``.
- ``thermojax/report/**``: reads a saved ``Result``; no Hydra, OmegaConf, rich, W&B, Ray or ``cli``.
- No module imports a ring above its own (core < models < pipeline < report < cli).
- Outside the model families' own modules (``pipeline/families/``, each quality kind's module
  and its template partial), ``pipeline/``, ``report/`` and ``cli/`` name no family: no family,
  quality kind, model class or quality class by name, no ``getattr(model, "family", default)``.

Every module of a folder is checked, including ones added later, and imports inside functions
count as much as those at the top.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import thermojax

PACKAGE = Path(thermojax.__file__).parent
EDGE_LIBRARIES = {"hydra", "omegaconf", "jinja2", "rich", "wandb", "ray"}
# The ring of each thermojax module, by its first component under thermojax/; the top-level
# modules are shared foundations (errors, files), the core's public face, or command forwarders.
RING = {"core": 1, "models": 2, "pipeline": 3, "report": 4, "cli": 5}
SHARED = {"thermojax", "thermojax.errors", "thermojax.files"}
FORWARDERS = {"thermojax.baseline", "thermojax.compare", "thermojax.launch"}
CORE_ALLOWED = {"__future__", "dataclasses", "functools", "itertools", "math", "collections"}
CORE_ALLOWED |= {"typing", "jax", "numpy", "optax", "thermojax"}
IO_BUILTINS = {"open", "print", "input", "exec", "eval", "__import__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules_in(folder: str) -> list[Path]:
    return sorted((PACKAGE / folder).rglob("*.py"))


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file (relative imports resolved)."""
    names = set()
    package = module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else None
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = (package or module_name(path)).split(".")
                base = base[: len(base) - node.level + 1]
                names.add(".".join([*base, *([node.module] if node.module else [])]))
            elif node.module:
                names.add(node.module)
    return names


def ring_of(name: str) -> int:
    parts = name.split(".")
    if name in SHARED or len(parts) < 2:
        return 0
    if name in FORWARDERS:
        return RING["cli"]
    return RING.get(parts[1], 0)


def ids(paths: list[Path]) -> list[str]:
    return [module_name(p) for p in paths]


ALL_MODULES = sorted(PACKAGE.rglob("*.py"))


def test_every_ring_is_a_folder_with_modules():
    for folder in RING:
        assert modules_in(folder), f"thermojax/{folder}/ has no modules"


@pytest.mark.parametrize("path", modules_in("core"), ids=ids(modules_in("core")))
def test_core_imports_only_numeric_libraries(path):
    found = imports(path)
    top = {name.split(".")[0] for name in found}
    assert top <= CORE_ALLOWED, f"{module_name(path)} imports {sorted(top - CORE_ALLOWED)}"
    ours = {name for name in found if name.startswith("thermojax")}
    assert all(name.startswith("thermojax.core") for name in ours), sorted(ours)


@pytest.mark.parametrize("path", modules_in("core"), ids=ids(modules_in("core")))
def test_core_calls_no_io_builtins(path):
    called = {
        node.func.id
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    }
    assert not called & IO_BUILTINS, f"{module_name(path)} calls {sorted(called & IO_BUILTINS)}"


FORBIDDEN = {
    "models": EDGE_LIBRARIES,
    "pipeline": EDGE_LIBRARIES,
    "report": EDGE_LIBRARIES - {"jinja2"},
}


@pytest.mark.parametrize(
    "path",
    [p for folder in FORBIDDEN for p in modules_in(folder)],
    ids=ids([p for folder in FORBIDDEN for p in modules_in(folder)]),
)
def test_inner_rings_import_no_edge_library(path):
    folder = module_name(path).split(".")[1]
    top = {name.split(".")[0] for name in imports(path)}
    assert not top & FORBIDDEN[folder], (
        f"{module_name(path)} imports {sorted(top & FORBIDDEN[folder])}"
    )


@pytest.mark.parametrize("path", ALL_MODULES, ids=ids(ALL_MODULES))
def test_no_module_imports_a_ring_above_its_own(path):
    own = ring_of(module_name(path))
    if module_name(path) == "thermojax":  # the public face re-exports the core
        own = RING["core"]
    upward = {
        name for name in imports(path) if name.startswith("thermojax") and ring_of(name) > own
    }
    assert not upward, f"{module_name(path)} (ring {own}) imports {sorted(upward)}"


def loaded_modules(statement: str) -> tuple[set[str], set[str]]:
    code = (
        f"import sys; {statement}\n"
        "print(','.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('thermojax'))))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    return set(out[0].split(",")), set(out[1].split(","))


def test_import_thermojax_pipeline_loads_no_edge_library_nor_report_or_cli():
    libraries, ours = loaded_modules("import thermojax.pipeline")
    # `import flax` itself loads rich (for its model tables); what Flax brings is not ours.
    with_flax, _ = loaded_modules("import flax")
    ours_loaded = libraries - (with_flax - {"thermojax"})
    assert not ours_loaded & EDGE_LIBRARIES, sorted(ours_loaded & EDGE_LIBRARIES)
    assert not libraries & (EDGE_LIBRARIES - {"rich"}), sorted(libraries & EDGE_LIBRARIES)
    assert not {m for m in ours if m.startswith(("thermojax.cli", "thermojax.report"))}


def test_import_thermojax_loads_only_the_core():
    libraries, ours = loaded_modules("import thermojax")
    heavy = EDGE_LIBRARIES | {"flax", "optax", "orbax", "safetensors"}
    assert not libraries & heavy, sorted(libraries & heavy)
    assert all(m in SHARED or m.startswith("thermojax.core") for m in ours), sorted(ours)
    # optimize_transitions needs optax: it loads on first use
    assert "thermojax.core.transition" not in ours


def model_classes() -> set[str]:
    """The classes under ``models/`` that declare their family (``family: ClassVar[str] = ...``)."""
    found = set()
    for path in modules_in("models"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                found |= {
                    node.name
                    for stmt in node.body
                    if isinstance(stmt, ast.AnnAssign | ast.Assign)
                    and stmt.value is not None
                    and any(
                        isinstance(t, ast.Name) and t.id == "family"
                        for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])
                    )
                }
    return found


def family_names() -> tuple[set[str], set[str], set[str]]:
    """``(names, classes, own modules)``: every registered family's and quality kind's name,
    the model and quality classes, and the modules that may name them."""
    from thermojax.pipeline.families import families
    from thermojax.pipeline.quality.kind import quality_kinds

    kinds = quality_kinds()
    names = {family.name for family in families()} | {kind.name for kind in kinds}
    classes = model_classes() | {kind.type.__name__ for kind in kinds}
    return names, classes, {kind.type.__module__ for kind in kinds}


NOT_A_FAMILY = {
    ("thermojax.pipeline.checkpoint.document", "text"): "a rule's text in quantization.json",
}
"""Strings that equal a family's or kind's name but mean something else, with what they mean."""

SEAM_MODULES = [p for ring in ("pipeline", "report", "cli") for p in modules_in(ring)]


def namings(path: Path, names: set[str], classes: set[str], module: str = "") -> list[str]:
    """Where the module ``module`` at ``path`` names a family: ``line: what``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        what = None
        if isinstance(node, ast.Constant) and node.value in names | classes:
            what = repr(node.value)
        elif isinstance(node, ast.Name) and node.id in classes:
            what = node.id
        elif isinstance(node, ast.Attribute) and node.attr in classes:
            what = f".{node.attr}"
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) == 3
            and isinstance(node.args[1], ast.Constant)
            and node.args[1].value == "family"
        ):
            what = "getattr(..., 'family', default)"
        if what is not None and (module, what.strip("'")) not in NOT_A_FAMILY:
            found.append(f"{node.lineno}: {what}")
    return found


@pytest.mark.parametrize("path", SEAM_MODULES, ids=ids(SEAM_MODULES))
def test_no_module_outside_the_families_names_a_family(path):
    names, classes, own = family_names()
    name = module_name(path)
    if name.startswith("thermojax.pipeline.families") or name in own:
        pytest.skip("a family's own module")
    found = namings(path, names, classes, name)
    assert not found, f"{name} names a family at {found}"


def test_the_family_check_finds_what_it_looks_for(tmp_path):
    names, classes, _ = family_names()
    assert {"digits-ddpm", "masked-diffusion-lm", "image", "text"} <= names
    assert {"DigitsDDPM", "MaskedDiffusionLM", "ImageQuality", "TextQuality"} <= classes
    leaky = tmp_path / "leaky.py"
    leaky.write_text(
        'kind = getattr(model, "family", "image")\n'
        'text = quality.kind == "text"\n'
        "isinstance(quality, TextQuality)\n"
        "words = 'a text about images'\n"
    )
    found = namings(leaky, names, classes)
    assert [line.split(":")[0] for line in found] == ["1", "1", "2", "3"], found


def test_report_templates_name_no_kind_outside_the_sample_partials():
    """The report's templates reach a kind's samples through its partial, never by its name."""
    names, _, _ = family_names()
    quoted = re.compile("[\"']({})[\"']".format("|".join(map(re.escape, sorted(names)))))
    for path in sorted((PACKAGE / "report" / "templates").rglob("*.j2")):
        if "samples" in path.relative_to(PACKAGE / "report" / "templates").parts:
            continue
        text = path.read_text()
        assert not quoted.search(text) and "is_text" not in text, path.name


def test_public_api_is_explicit():
    expected = {
        "quantize",
        "dequantize",
        "fake_quantize",
        "QTensor",
        "activation_params",
        "fake_quantize_activations",
        "fake_quantize_per_token",
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
