"""The installed environment works, and the declared dependencies are exactly what the code imports.

The import checks run first (tests/conftest.py orders them so): a resolver that pairs incompatible
releases (dask with a distributed from another year) fails here, in one line that names the module,
rather than deep inside the suite.
"""
from __future__ import annotations

import ast
import configparser
import importlib
import importlib.metadata as metadata
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SETUP = configparser.ConfigParser()
SETUP.read(ROOT / "setup.cfg", encoding="utf-8")

# Declared but never imported by name, each for a reason.
NOT_IMPORTED = {
    "imagecodecs": "tifffile loads it to decode compressed TIFFs",
    "bioimageio-core": "runs the packages `btunet export` writes; the tests run them with it",
    "ruff": "the linter `make test` runs",
    "pytest-qt": "a pytest plugin (the qtbot fixture)",
    "pytest-xvfb": "a pytest plugin (the virtual display)",
}
# The import names of each extra that `make test` installs: every one must import.
OPTIONAL_MODULES = {
    "napari": ["napari", "qtpy", "qtpy.QtWidgets", "psygnal", "superqt"],
    "scaling": ["dask.array", "distributed", "zarr"],
    "export": ["bioimageio.spec", "bioimageio.core", "onnx", "onnxruntime"],
}


def requirements(section: str, key: str) -> list[Requirement]:
    lines = SETUP.get(section, key).splitlines()
    return [Requirement(line.split("#")[0].strip()) for line in lines if line.split("#")[0].strip()]


def extras() -> dict[str, list[Requirement]]:
    return {name: requirements("options.extras_require", name) for name in SETUP["options.extras_require"]}


def with_their_extras(reqs: list[Requirement]) -> set[str]:
    """Distribution names the requirements install directly, including those a `pkg[extra]` pulls in."""
    names = set()
    for req in reqs:
        names.add(canonicalize_name(req.name))
        for extra in req.extras:
            for line in metadata.requires(req.name) or []:
                inner = Requirement(line)
                if inner.marker is not None and inner.marker.evaluate({"extra": extra}):
                    names.add(canonicalize_name(inner.name))
    return names


def imported_modules(*folders: str) -> set[str]:
    """Every third-party module imported anywhere in the folders (deferred imports too), to two levels:
    a namespace such as `bioimageio` is shared by several distributions."""
    own = {"btunet", "napari_btunet", "tests", "scratch"}
    own |= {path.stem for folder in (*folders, "benchmarks") for path in (ROOT / folder).rglob("*.py")}
    found = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    found.update(alias.name for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    found.add(node.module)
    skip = sys.stdlib_module_names | own | {"__future__"}
    return {".".join(name.split(".")[:2]) for name in found if name.split(".")[0] not in skip}


def distributions_of(modules: set[str]) -> set[str]:
    """Import names -> the distributions that provide them; one not installed here (a benchmark's
    baseline, outside the `testing` extra) is taken to be named as it is imported."""
    providers = metadata.packages_distributions()
    found = set()
    for module in modules:
        top, _, sub = module.partition(".")
        dists = providers.get(top, [top])
        if len(dists) > 1:  # a namespace: the distribution that holds the subpackage
            dists = [d for d in dists if any(str(f).startswith(f"{top}/{sub}/") for f in metadata.files(d) or [])]
        found.update(canonicalize_name(d) for d in dists[:1])
    return found


@pytest.mark.parametrize("extra,module", [(e, m) for e, mods in OPTIONAL_MODULES.items() for m in mods])
def test_every_optional_module_imports(extra, module):
    try:
        importlib.import_module(module)
    except Exception as error:  # noqa: BLE001 - any failure here is the one clear message we want
        pytest.fail(f"extra [{extra}]: `import {module}` fails ({type(error).__name__}: {error}); "
                    f"installed releases do not fit together: pin them in setup.cfg")


def test_dask_and_distributed_are_one_release():
    """`distributed` pins its dask exactly; a mismatch imports, then fails at the first cluster."""
    assert metadata.version("distributed") == metadata.version("dask")


def test_the_engine_and_plugin_declare_exactly_what_they_import():
    base = with_their_extras(requirements("options", "install_requires"))
    optional = {name: with_their_extras(reqs) for name, reqs in extras().items()}
    engine = distributions_of(imported_modules("src/btunet"))
    plugin = distributions_of(imported_modules("napari_btunet"))
    declared_for_code = base | optional["scaling"] | optional["export"] | optional["napari"]

    assert engine - base - optional["scaling"] - optional["export"] == set(), "engine imports undeclared"
    assert plugin - base - optional["napari"] == set(), "plugin imports undeclared (napari extra)"
    direct = {canonicalize_name(r.name) for name in ("napari", "scaling", "export") for r in extras()[name]}
    direct |= {canonicalize_name(r.name) for r in requirements("options", "install_requires")}
    unused = direct - engine - plugin - set(NOT_IMPORTED)
    assert unused == set(), f"declared but never imported: {sorted(unused)}"
    assert engine | plugin <= declared_for_code


def test_benchmarks_and_tests_declare_what_they_import():
    bench = with_their_extras(requirements("options", "install_requires") + extras()["bench"])
    testing = with_their_extras([r for name in ("napari", "scaling", "export", "testing") for r in extras()[name]]
                                + requirements("options", "install_requires"))
    assert distributions_of(imported_modules("benchmarks")) - bench - testing == set()
    used_by_tests = distributions_of(imported_modules("tests", "examples", "scripts"))
    assert used_by_tests - testing == set()
    testing_only = {canonicalize_name(r.name) for r in extras()["testing"]} - {"napari-btunet"}
    assert testing_only - used_by_tests - set(NOT_IMPORTED) == set(), "testing extra lists unused packages"


def test_one_version_source():
    """setup.cfg holds the version; both packages read it back from the installed distribution."""
    import btunet
    import napari_btunet

    declared = SETUP.get("metadata", "version")
    assert btunet.__version__ == napari_btunet.__version__ == metadata.version("napari-btunet") == declared
    literal = [p for p in [*(ROOT / "src").rglob("*.py"), *(ROOT / "napari_btunet").rglob("*.py")]
               if f'"{declared}"' in p.read_text(encoding="utf-8")]
    assert literal == []


def test_license_file_is_the_declared_one():
    assert SETUP.get("metadata", "license") == "BSD-3-Clause"
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("BSD 3-Clause License") and "Neither the name of the copyright holder" in text
    assert "LICENSE" in SETUP.get("metadata", "license_files")
