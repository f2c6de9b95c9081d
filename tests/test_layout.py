"""The layout of the code: layers that import only downward, no import cycles, small modules, and an
engine that never imports a GUI.

Static checks with ``ast`` (nothing is imported): every ``import`` counts, at module level or
inside a function, so neither a cycle nor an upward import can hide behind a deferred import.
"""
from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = {"btunet": ROOT / "src" / "btunet", "napari_btunet": ROOT / "napari_btunet"}

#: The engine's sub-packages, lowest first: a module imports from its own layer and the layers below,
#: never from one above. The package itself (``btunet/__init__.py``, the public API, and
#: ``__main__``) sits above them all; a layer reads nothing from it but constants such as
#: ``__version__``.
LAYERS = [
    "base",       # errors, atomic writes, setting checks and their schema, device, threads, time left
    "labels",     # what labels mean: heads, annotations, instances, metrics
    "io",         # reading images, masks, axes, pairs, zarr, bioimage.io packages, the sample
    "models",     # the networks, their folded and ONNX forms, the projector, the fused runtime
    "core",       # the configs, checkpoint metadata, checkpoints
    "pipeline",   # source -> normalised planes -> probabilities; threshold and separation
    "train",      # pre-training and fine-tuning
    "infer",      # prediction, previews, block-wise prediction
    "exporting",  # TorchScript, ONNX and bioimage.io packages
    "cli",        # the command line and the headless demo
]
TOP = {"btunet", "btunet.__main__"}

MAX_LINES = 400
#: Files allowed over MAX_LINES while they are being split. Delete each entry as soon as its file
#: is short enough; the goal is an empty set.
TOO_LONG_FOR_NOW: set[str] = set()

#: what the engine never imports: GUI toolkits, napari, and the plugin built on it
NOT_FOR_THE_ENGINE = {"qtpy", "napari", "magicgui", "superqt", "PyQt5", "PyQt6", "PySide2", "PySide6",
                      "napari_btunet"}


def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of both packages."""
    found = {}
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imports(name: str, path: Path) -> Iterator[tuple[str, list[str]]]:
    """(absolute module, imported names) of every import statement in the module ``name``."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = package[:len(package) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            yield base, [alias.name for alias in node.names]


def own_names(path: Path) -> set[str]:
    """Names a module binds itself (assignments, functions, classes), not through imports."""
    names = set()
    statements = list(ast.parse(path.read_text(encoding="utf-8")).body)
    for node in statements:
        if isinstance(node, ast.Try):  # e.g. ``try: __version__ = ... except ...: __version__ = ...``
            statements += node.body + [s for handler in node.handlers for s in handler.body]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of both packages it imports.

    ``from pkg import sub`` points at ``pkg.sub`` when that is a module, else at ``pkg``; a dotted
    name that is not a module points at its longest prefix that is one. A module reading a
    constant its own package's ``__init__`` defines (``from . import __version__``) needs none of
    the modules that ``__init__`` imports, so that gets no edge.
    """
    known = modules()
    constants = {name: own_names(path) for name, path in known.items() if path.name == "__init__.py"}

    def resolve(dotted: str) -> str | None:
        parts = dotted.split(".")
        while parts and ".".join(parts) not in known:
            parts.pop()
        return ".".join(parts) or None

    graph: dict[str, set[str]] = {}
    for name, path in known.items():
        targets = set()
        for base, names in imports(name, path):
            if names and name.startswith(base + ".") and set(names) <= constants.get(base, set()):
                continue
            submodules = [f"{base}.{n}" for n in names if f"{base}.{n}" in known]
            targets.update(submodules)
            if len(submodules) < len(names) or not names:
                targets.add(resolve(base))
        graph[name] = {t for t in targets if t is not None and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                found = visit(target)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_graph_sees_deferred_and_relative_imports():
    graph = import_graph()
    assert "btunet.base.errors" in graph["btunet.cli.commands"]      # module level, relative
    assert "btunet.train.pretrain" in graph["btunet.cli.commands"]   # inside a function
    assert "btunet" in graph["napari_btunet._jobs"]                  # ``from btunet import ...`` in a method
    assert "btunet.models" in graph["btunet.train.finetune"]
    assert "btunet.base.fields" in graph["btunet.core.metadata"]     # ``from ..base import fields``
    assert "btunet" not in graph["btunet.core.checkpoint"]           # only ``from .. import __version__``
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_modules_stay_short():
    too_long = {}
    for path in modules().values():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        if lines > MAX_LINES:
            too_long[path.relative_to(ROOT).as_posix()] = lines
    unexpected = {f: n for f, n in too_long.items() if f not in TOO_LONG_FOR_NOW}
    assert not unexpected, f"modules over {MAX_LINES} lines (split them): {unexpected}"
    missing = sorted(f for f in TOO_LONG_FOR_NOW if not (ROOT / f).is_file())
    assert not missing, f"TOO_LONG_FOR_NOW names files that do not exist: {missing}"


def test_engine_never_imports_a_gui():
    offenders = []
    for name, path in modules().items():
        if name.split(".")[0] != "btunet":
            continue
        for base, _ in imports(name, path):
            if base.split(".")[0] in NOT_FOR_THE_ENGINE:
                offenders.append(f"{name} imports {base}")
    assert not offenders, offenders


def layer_of(name: str) -> int | None:
    """The index in LAYERS of an engine module's layer; None for the package itself (TOP)."""
    parts = name.split(".")
    if name in TOP or parts[0] != "btunet":
        return None
    return LAYERS.index(parts[1]) if parts[1] in LAYERS else -1


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Each import of an engine module from a higher layer, or from the package above all layers."""
    found = []
    for name, targets in sorted(graph.items()):
        here = layer_of(name)
        if here is None or name.split(".")[0] != "btunet":
            continue
        for target in sorted(t for t in targets if t.split(".")[0] == "btunet"):
            there = layer_of(target)
            if there is None:
                found.append(f"{name} imports {target}, the package above all layers")
            elif there > here:
                found.append(f"{name} ({LAYERS[here]}) imports {target} ({LAYERS[there]}, a higher layer)")
    return found


def test_every_engine_module_lives_in_a_layer():
    engine = [name for name in modules() if name.split(".")[0] == "btunet"]
    outside = sorted(name for name in engine if name not in TOP and layer_of(name) == -1)
    assert not outside, f"engine modules outside the layers {LAYERS}: {outside}"
    folder = PACKAGES["btunet"]
    missing = [layer for layer in LAYERS if not (folder / layer / "__init__.py").is_file()]
    assert not missing, f"layers without a package: {missing}"


def test_the_layer_check_sees_an_upward_import():
    graph = {"btunet.base.errors": {"btunet.cli.commands"}, "btunet.cli.commands": {"btunet.base.errors"},
             "btunet.io.imageio": {"btunet"}, "btunet": {"btunet.cli"}, "napari_btunet._jobs": {"btunet"}}
    assert upward_imports(graph) == [
        "btunet.base.errors (base) imports btunet.cli.commands (cli, a higher layer)",
        "btunet.io.imageio imports btunet, the package above all layers"]


def test_layers_import_only_downward():
    upward = upward_imports(import_graph())
    assert not upward, "imports from a higher layer:\n" + "\n".join(upward)
