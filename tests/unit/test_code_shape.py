"""The package keeps the shape docs/architecture.md describes: modules import each other without
a cycle, and folders too (imports inside functions counted: they are dependencies all the same);
the job runtime (job/) imports no recipe and nothing that sits above it; no function runs over 60
lines; and only contract.py (and the serving settings) reads the environment or spells an /opt/ml
path."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "container" / "tuneforge"
LONGEST = 60


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = ("tuneforge",) + path.relative_to(PACKAGE).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _literal_import(node) -> str | None:
    """The module of `importlib.import_module("x")` / `__import__("x")` with a literal name, else None."""
    if not isinstance(node, ast.Call) or not node.args or not isinstance(node.args[0], ast.Constant):
        return None
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
    value = node.args[0].value
    return value if name in ("import_module", "__import__") and isinstance(value, str) else None


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The package modules `name` imports anywhere: at module level, inside functions (they run
    later, but are dependencies all the same) and by importlib with a literal module name."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{module}.{alias.name}"
                targets.add(full if full in modules else module)
        elif isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif _literal_import(node):
            literal = _literal_import(node)
            targets.add(f"{package}{literal}" if literal.startswith(".") else literal)
    return {t for t in targets if t in modules and t != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _folder(module: str, modules: dict) -> str:
    """A module's node in the folder graph: the first sub-package under tuneforge, or the top-level
    module itself ("(top).contract")."""
    parts = module.split(".")
    in_folder = len(parts) > 2 or (len(parts) == 2 and modules[module].name == "__init__.py")
    return parts[1] if in_folder else "(top)." + parts[-1]


def _folder_graph(graph: dict) -> dict[str, set[str]]:
    modules = _modules()
    folders: dict[str, set[str]] = {}
    for name, targets in graph.items():
        here = _folder(name, modules)
        folders.setdefault(here, set()).update(f for f in (_folder(t, modules) for t in targets) if f != here)
    return folders


def _cycle(graph: dict) -> list[str] | None:
    done, path = set(), []

    def visit(node):
        if node in path:
            return path[path.index(node):] + [node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph[node]):
            found = visit(target)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    return next((c for c in map(visit, sorted(graph)) if c), None)


def test_no_import_cycle():
    graph = _graph()
    assert "tuneforge.serve.errors" in graph["tuneforge.serve.app"]  # the graph is really read
    assert "tuneforge.llm.recipe" in graph["tuneforge.llm.job"]  # an import inside a function counts
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


def test_no_folder_import_cycle():
    folders = _folder_graph(_graph())
    assert "job" in folders["llm"] and "job" in folders["diffusion"]  # the folder graph is really read
    assert "(top).errors" in folders["(top).contract"]  # a top-level module is a node of its own
    assert _cycle(folders) is None, " -> ".join(_cycle(folders))


# what the job runtime must not know: the recipes and the parts that sit above it
ABOVE_JOB = ("llm", "diffusion", "report", "evaluation", "trackers", "serve", "recipes")


def test_the_job_runtime_imports_no_recipe():
    graph = _graph()
    climbs = [f"{name} -> {target}" for name, targets in sorted(graph.items()) if name.startswith("tuneforge.job.")
              for target in sorted(targets) if target.split(".")[1] in ABOVE_JOB]
    assert "tuneforge.job.distributed" in graph["tuneforge.job.stopping"]  # the job's own imports are read
    assert not climbs, "hand recipes to the launcher (tuneforge/recipes.py) instead: " + "; ".join(climbs)
    named = [f"{path.relative_to(PACKAGE)}:{line}" for path in sorted((PACKAGE / "job").rglob("*.py"))
             for line in _module_names(path.read_text(), ABOVE_JOB)]
    assert not named, "the job runtime names a recipe's module (a child's -m or -c): " + "; ".join(named)


def _module_names(source: str, packages) -> list[int]:
    """Lines of string literals (docstrings aside) naming one of tuneforge's `packages`."""
    tree = ast.parse(source)
    docs = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docs and any(f"tuneforge.{name}" in node.value for name in packages)]


def test_imports_inside_functions_and_by_importlib_are_read(tmp_path):
    module = tmp_path / "mod.py"
    module.write_text("import importlib\n\ndef f():\n    from .b import c\n    importlib.import_module('.d', 'x')\n"
                      "    return importlib.import_module('x.e')\n")
    found = _imports("x.mod", module, {"x.b", "x.b.c", "x.d", "x.e", "x.mod"})
    assert found == {"x.b.c", "x.d", "x.e"}
    assert _module_names('"""tuneforge.llm in prose"""\nchild = "from tuneforge.llm import run"\n', ["llm"]) == [2]


def test_cycle_finder_finds_one():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_no_function_over_60_lines():
    long = [f"{path.relative_to(PACKAGE)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in PACKAGE.rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > LONGEST]
    assert not long, "split these functions: " + "; ".join(long)


# the modules that may read os.environ: the one reader, and the serving side's pydantic settings
ENV_READERS = {"contract.py", "serve/settings.py"}
ENV_WRITES = {"setdefault", "pop", "update", "clear", "__setitem__", "__delitem__"}  # set for child processes
ENV_COPIES = {"items", "copy"}  # the whole environment, handed to a child process


def _is_environ(node) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "environ" and getattr(node.value, "id", None) == "os"


def _is_read(node, parent) -> bool:
    """Whether this use of os.environ reads a variable (writes and copies for children do not)."""
    if isinstance(parent, ast.Attribute):
        return parent.attr not in ENV_WRITES | ENV_COPIES
    if isinstance(parent, ast.Subscript) and parent.value is node:
        return isinstance(parent.ctx, ast.Load)
    if isinstance(parent, ast.Call) and getattr(parent.func, "id", None) == "dict" and node in parent.args:
        return False
    return True  # `in os.environ`, or the mapping passed on or bound to a name


def _environment_reads(source: str) -> list[int]:
    """Lines that read the environment: os.getenv, os.environ.get / [name] / `in`, `from os import environ`."""
    tree = ast.parse(source)
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    lines = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr == "getenv" and getattr(node.value, "id", None) == "os":
            lines.append(node.lineno)
        elif _is_environ(node) and _is_read(node, parents.get(node)):
            lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and node.module == "os" and \
                {a.name for a in node.names} & {"environ", "getenv", "environb", "getenvb"}:
            lines.append(node.lineno)
    return sorted(lines)


def test_only_contract_reads_the_environment():
    found = [f"{path.relative_to(PACKAGE)}:{line}" for path in sorted(PACKAGE.rglob("*.py"))
             if path.relative_to(PACKAGE).as_posix() not in ENV_READERS
             for line in _environment_reads(path.read_text())]
    assert not found, "read environment variables through contract.py (TrainEnv or a function there): " + \
        "; ".join(found)
    assert _environment_reads((PACKAGE / "contract.py").read_text())  # the check really sees reads


def test_environment_read_finder():
    reads = """import os
a = os.environ.get("A")
b = os.getenv("B")
c = "C" in os.environ
d = os.environ["D"]
e = f(os.environ)
"""
    writes = """import os
os.environ["A"] = "1"
os.environ.setdefault("B", "1")
os.environ.pop("C", None)
child = dict(os.environ, D="1")
kept = {k: v for k, v in os.environ.items() if k != "E"}
"""
    assert _environment_reads(reads) == [2, 3, 4, 5, 6]
    assert _environment_reads(writes) == []


def _opt_ml_literals(source: str) -> list[int]:
    """Lines of string literals that are an /opt/ml path; docstrings and prose may mention it."""
    tree = ast.parse(source)
    docs = {id(node.value) for node in ast.walk(tree) if isinstance(node, ast.Expr)}
    return [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and id(node) not in docs and node.value.strip().startswith("/opt/ml")]


def test_only_contract_spells_opt_ml():
    found = [f"{path.relative_to(PACKAGE)}:{line}" for path in sorted(PACKAGE.rglob("*.py"))
             if path.name != "contract.py" or path.parent != PACKAGE
             for line in _opt_ml_literals(path.read_text())]
    assert not found, "build /opt/ml paths with contract.Paths: " + "; ".join(found)
    assert _opt_ml_literals((PACKAGE / "contract.py").read_text())
    assert _opt_ml_literals('"""/opt/ml in a docstring"""\nhelp = "the /opt/ml tree"\n') == []
