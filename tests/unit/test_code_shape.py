"""The package keeps the shape docs/architecture.md describes: modules import each other without
a cycle (at import time), no function runs over 60 lines, and only contract.py (and the serving
settings) reads the environment or spells an /opt/ml path."""

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


def _imports(name: str, path: Path, modules: dict) -> set[str]:
    """The package modules `name` imports at module level (imports inside functions run later)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    targets = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{module}.{alias.name}"
                targets.add(full if full in modules else module)
        elif isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
    return {t for t in targets if t in modules and t != name}


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
    modules = _modules()
    graph = {name: _imports(name, path, modules) for name, path in modules.items()}
    assert "tuneforge.serve.errors" in graph["tuneforge.serve.app"]  # the graph is really read
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


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
