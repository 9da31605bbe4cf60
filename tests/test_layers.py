"""captag's layers: a module imports only captag modules of a lower layer or of its own package.

Layers, from the bottom: 0 the core (captag/__init__, errors, config, files); 1 data, evaluation;
2 models; 3 runs; 4 training, inference; 5 experiments, deploy; 6 serve; 7 cli. Two packages of
the same layer (data and evaluation, training and inference, experiments and deploy) must not
import each other. The static check reads
every import statement (also inside functions, absolute or relative, and importlib.import_module
with a literal name; imports under `if TYPE_CHECKING:` count too); the runtime check imports every module with no captag module loaded yet
(one forked interpreter per package) and looks at what got into sys.modules.
"""

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
CORE = ("errors", "config", "files")  # with captag/__init__: one package, the core
RANK = {"core": 0, "data": 1, "evaluation": 1, "models": 2, "runs": 3,
        "training": 4, "inference": 4, "experiments": 5, "deploy": 5, "serve": 6, "cli": 7}


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted((SRC / "captag").rglob("*.py"))}


def package_of(module: str) -> str:
    """The layer table's name for the package that holds `module` ("core" for rank 0)."""
    parts = module.split(".")
    return "core" if len(parts) == 1 or parts[1] in CORE else parts[1]


def allowed(importer: str, imported: str) -> bool:
    mine, theirs = package_of(importer), package_of(imported)
    return mine == theirs or RANK[theirs] < RANK[mine]


def describe(module: str) -> str:
    return f"{module} ({package_of(module)}, layer {RANK[package_of(module)]})"


def modules_of(package: str) -> list[str]:
    return [m for m in MODULES if package_of(m) == package]


# --- static ----------------------------------------------------------------

def imported_names(module: str, tree: ast.AST):
    """(line, captag module) for each import of a captag module in the module's syntax tree."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "captag")
        elif isinstance(node, ast.ImportFrom):
            base = absolute_base(module, node)
            if base.split(".")[0] == "captag":
                yield from ((node.lineno, submodule(base, a.name)) for a in node.names)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) in (
                "import_module", "__import__") and node.args and isinstance(node.args[0], ast.Constant):
            name = node.args[0].value
            if isinstance(name, str) and name.split(".")[0] == "captag":
                yield node.lineno, name


def absolute_base(module: str, node: ast.ImportFrom) -> str:
    """The absolute module that `from <base> import ...` names, for relative imports too."""
    if not node.level:
        return node.module or ""
    package = module if MODULES[module].name == "__init__.py" else module.rsplit(".", 1)[0]
    anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
    return f"{anchor}.{node.module}" if node.module else anchor


def submodule(base: str, name: str) -> str:
    """`base.name` when that is a module of captag (from captag import data), else `base`."""
    return f"{base}.{name}" if f"{base}.{name}" in MODULES else base


def test_import_finder_sees_every_form():
    source = """
import captag.models.fusion
from captag import data, errors
from captag.training.trainer import train
from . import labels
from .. import config
from ..runs import RunFolder
import numpy, captag

def later():
    from captag.inference import evaluate
    importlib.import_module("captag.cli")
"""
    found = list(imported_names("captag.data.records", ast.parse(source)))
    assert found == [(2, "captag.models.fusion"), (3, "captag.data"), (3, "captag.errors"),
                     (4, "captag.training.trainer"), (5, "captag.data.labels"), (6, "captag.config"),
                     (7, "captag.runs"), (8, "captag"), (11, "captag.inference.evaluate"), (12, "captag.cli")]
    assert [allowed("captag.data.records", name) for _, name in found] == [
        False, True, True, False, True, True, False, True, False, False]
    assert not allowed("captag.training.trainer", "captag.inference") and allowed("captag.config", "captag.errors")
    assert allowed("captag.inference.evaluate", "captag.runs.folder")
    assert not allowed("captag.evaluation.metrics", "captag.data.records")


def test_every_module_has_a_layer():
    assert "captag.data.records" in MODULES and "captag.cli" in MODULES
    unknown = sorted({package_of(m) for m in MODULES} - set(RANK))
    assert not unknown, f"packages missing from the layer table in {__file__}: {unknown}"


@pytest.mark.parametrize("package", list(RANK))
def test_imports_respect_layers(package):
    wrong = []
    for module in modules_of(package):
        path = MODULES[module]
        for line, name in imported_names(module, ast.parse(path.read_text(), str(path))):
            if package_of(name) in RANK and not allowed(module, name):
                wrong.append(f"{path.relative_to(SRC.parent)}:{line}: {describe(module)} imports {describe(name)}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)


# --- runtime ---------------------------------------------------------------

# In one interpreter: import the third-party libraries that captag modules import (argv[2]), then
# fork one child per package (argv[1]) with no captag module loaded yet. Each child imports its
# package's modules and prints, as JSON, which captag module first loaded each captag module (the
# innermost captag frame on the stack; None: the script itself) and which imports failed.
SCRIPT = """
import importlib, json, os, sys

class Recorder:
    loaded_by, errors = {}, {}

    def find_spec(self, name, path=None, target=None):
        frame = sys._getframe(1)
        while frame and frame.f_globals.get("__name__", "").split(".")[0] != "captag":
            frame = frame.f_back
        if name.split(".")[0] == "captag":
            self.loaded_by.setdefault(name, frame and frame.f_globals["__name__"])
        return None

def report(package, modules):
    sys.meta_path.insert(0, Recorder())
    for name in modules:
        try:
            importlib.import_module(name)
        except Exception as exc:
            Recorder.errors[name] = f"{type(exc).__name__}: {exc}"
    loaded = sorted(m for m in sys.modules if m.split(".")[0] == "captag")
    result = {"loaded": loaded, "loaded_by": Recorder.loaded_by, "errors": Recorder.errors}
    print("LAYERS " + json.dumps({package: result}), flush=True)

for name in json.loads(sys.argv[2]):
    try:
        importlib.import_module(name)
    except Exception:
        pass
for package, modules in json.loads(sys.argv[1]).items():
    sys.stdout.flush()
    child = os.fork()
    if child == 0:
        try:
            report(package, modules)
        finally:
            os._exit(0)
    os.waitpid(child, 0)
"""


def third_party_imports() -> list[str]:
    """The modules outside captag that captag modules import at their top level."""
    names = set()
    for path in MODULES.values():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module)
    return sorted(n for n in names if n.split(".")[0] not in ("captag", "__future__"))


@pytest.fixture(scope="module")
def runtime_imports() -> dict:
    """For each package: what importing all its modules with no captag module loaded loads."""
    packages = {package: modules_of(package) for package in RANK}
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(SRC), os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(packages), json.dumps(third_party_imports())],
                         env=env, capture_output=True, text=True, cwd=SRC.parent, timeout=300)
    results = {}
    for line in run.stdout.splitlines():
        if line.startswith("LAYERS "):
            results.update(json.loads(line[len("LAYERS "):]))
    assert set(results) == set(RANK), f"the import script gave no result for some packages:\n{run.stderr[-3000:]}"
    return results


def chain(module: str, loaded_by: dict, package: str) -> str:
    """"a -> b -> module": who imported whom, back to a module of `package`."""
    names = [module]
    while loaded_by.get(names[-1]) and package_of(names[-1]) != package:
        names.append(loaded_by[names[-1]])
    return " -> ".join(reversed(names))


@pytest.mark.parametrize("package", list(RANK))
def test_importing_loads_no_higher_layer(runtime_imports, package):
    if not modules_of(package):
        pytest.skip(f"no package captag.{package} in this checkout")
    result, me = runtime_imports[package], modules_of(package)[0]
    loaded_by = result["loaded_by"]
    tried = sorted(set(result["loaded"]) | {m for m in loaded_by if m in MODULES})  # also failed imports
    forbidden = [m for m in tried if not allowed(me, m)]
    crossings = [m for m in forbidden if allowed(me, loaded_by.get(m) or me)]  # loaded from an allowed module
    wrong = [f"loads {chain(m, loaded_by, package)}  [{package_of(m)}, layer {RANK[package_of(m)]}]"
             for m in crossings]
    wrong += [f"{name} fails to import: {error}" for name, error in result["errors"].items()]
    assert not (forbidden or result["errors"]), (
        f"importing the modules of {package} (layer {RANK[package]}) with no captag module loaded "
        f"({len(forbidden)} modules of other layers loaded):\n" + "\n".join(wrong))
